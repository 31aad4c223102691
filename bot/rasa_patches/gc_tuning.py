"""The Rasa server's start-up state frozen out of the garbage collector's reach (bot/gc_tuning.py).

Replaces: `rasa.core.run.load_agent_on_start`, wrapped to call `gc.freeze()` once the model is in
memory. Measured by `make soak` at 30 msg/s: the Rasa server's full collections 1.05-1.2 s →
0.44-0.47 s.
"""

from __future__ import annotations

from bot.gc_tuning import freezing_after


def install() -> None:
    """Freeze what the Rasa server loaded at start, right after its model is in memory.

    `rasa.core.run.serve_application` registers `load_agent_on_start` by its module name, so
    this must run before it does (`python -m bot rasa run` calls it before Rasa's main)."""
    import rasa.core.run

    if not getattr(rasa.core.run.load_agent_on_start, "_freezes", False):
        rasa.core.run.load_agent_on_start = freezing_after(rasa.core.run.load_agent_on_start, "rasa model")
        rasa.core.run.load_agent_on_start._freezes = True

"""Every change this project makes to Rasa's internals, installed from one start-up point.

`python -m bot rasa …` (how `make run`, the tests and the benchmarks start the Rasa server) calls
`install()` before Rasa's main; nothing is patched on import. The patches call private Rasa APIs,
so `install()` refuses any Rasa but the one they were written and tested against.
`CRS_RASA_PATCHES` = `all` (default) | `none` | a comma-separated list of names, to bisect a
problem one patch at a time. `none` is for that and for comparison runs: without
`action_failsafe` a failed action answers nothing, without `log_privacy` Rasa's debug logs carry
patients' words.

One module per patch, each saying what it replaces, why, and what it gained; each has an
`install()`, run in this order:
- `response_validation`, `event_lookup`, `graph_runner`, `past_states`, `debug_format`,
  `endpoint_session`: speed-ups found with a py-spy profile of the server
  (tests/rasa_patches/test_speedups.py compares each with the Rasa code it replaces);
- `action_failsafe`: RemoteAction.run answers with the fail-safe reply when the action server fails;
- `log_privacy`: structlog's processors start with a redaction of message text;
- `gc_tuning`: the model loaded at start is frozen out of the garbage collector's reach.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

ENV = "CRS_RASA_PATCHES"
RASA_VERSION = "3.6.21"
SAFETY = ("action_failsafe", "log_privacy")
log = logging.getLogger(__name__)


class RasaVersionError(RuntimeError):
    pass


PATCHES = (
    "response_validation", "event_lookup", "graph_runner", "past_states", "debug_format", "endpoint_session",
    "action_failsafe", "log_privacy", "gc_tuning",
)  # fmt: skip


def module(name: str) -> ModuleType:
    """A patch's module, imported only when asked for (each imports the Rasa internals it replaces)."""
    return importlib.import_module(f"{__name__}.{name}")


def names() -> list[str]:
    return list(PATCHES)


def selected(value: str) -> list[str]:
    """`all`, `none` or names, comma-separated; an unknown name is an error (a typo must not switch a patch off)."""
    value = value.strip().lower() or "all"
    if value == "all":
        return names()
    if value == "none":
        return []
    chosen = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in PATCHES]
    if unknown:
        raise ValueError(f"{ENV}: unknown patch {', '.join(unknown)} (known: {', '.join(names())}, or all / none)")
    return [n for n in PATCHES if n in chosen]  # in PATCHES' order, each once


def install(value: str | None = None) -> list[str]:
    """Install the selected patches (default: $CRS_RASA_PATCHES, else all); returns their names."""
    chosen = selected(os.environ.get(ENV, "all") if value is None else value)
    if chosen:
        import rasa

        if rasa.__version__ != RASA_VERSION:
            raise RasaVersionError(f"the Rasa patches were written for Rasa {RASA_VERSION}, not {rasa.__version__}: set {ENV}=none")
    for name in chosen:
        module(name).install()
    off = [n for n in SAFETY if n not in chosen]
    if off:
        log.warning("rasa_patches.safety_off %s", ",".join(off))
    log.info("rasa_patches.installed %s", ",".join(chosen) or "none")
    return chosen

"""The Rasa patches: one start-up point, chosen by CRS_RASA_PATCHES, refused on another Rasa."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bot import PROJECT_ROOT, rasa_patches


def test_a_selection_is_all_none_or_known_names() -> None:
    assert rasa_patches.selected("all") == rasa_patches.names() == rasa_patches.selected("")
    assert rasa_patches.selected("none") == []
    assert rasa_patches.selected(" graph_runner, log_privacy ") == ["graph_runner", "log_privacy"]
    with pytest.raises(ValueError, match="unknown patch graph_runer"):
        rasa_patches.selected("graph_runer")  # a typo must not quietly switch a patch off
    assert {"action_failsafe", "log_privacy", "gc_tuning", "past_states"} <= set(rasa_patches.names())


def test_each_patch_is_one_module_that_says_what_it_replaces() -> None:
    files = {p.stem for p in (PROJECT_ROOT / "bot" / "rasa_patches").glob("*.py")} - {"__init__"}
    assert files == set(rasa_patches.PATCHES), "a module of bot/rasa_patches/ that no name switches, or a name without its module"
    for name in rasa_patches.PATCHES:
        module = rasa_patches.module(name)
        assert callable(module.install) and "Replaces" in (module.__doc__ or ""), name


def test_another_rasa_is_refused_unless_nothing_is_patched(monkeypatch: pytest.MonkeyPatch) -> None:
    import rasa

    monkeypatch.setattr(rasa, "__version__", "3.7.0")
    with pytest.raises(rasa_patches.RasaVersionError, match="3.6.21"):
        rasa_patches.install("graph_runner")
    assert rasa_patches.install("none") == []


@pytest.mark.slow
def test_nothing_is_patched_on_import_and_each_patch_only_when_chosen() -> None:
    """In a fresh interpreter: loading our Rasa component patches nothing; installing one patch changes only its target."""
    probe = (
        "import bot.nlu.rasa_component\n"
        "from rasa.engine.runner.dask import DaskGraphRunner\n"
        "from rasa.core.actions.action import RemoteAction\n"
        "from bot import rasa_patches\n"
        "before = (DaskGraphRunner.run.__module__, RemoteAction.run.__module__)\n"
        "rasa_patches.install('graph_runner')\n"
        "print(before, (DaskGraphRunner.run.__module__, RemoteAction.run.__module__))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip().splitlines()[-1] == (
        "('rasa.engine.runner.dask', 'rasa.core.actions.action') ('bot.rasa_patches.graph_runner', 'rasa.core.actions.action')"
    )

"""The start-up freeze that keeps full garbage collections short in the servers."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest

from bot.gc_tuning import freeze_long_lived, freezing_after
from bot.rasa_patches.gc_tuning import install as install_for_rasa_server


@pytest.fixture(autouse=True)
def _unfreeze() -> Iterator[None]:
    yield
    gc.unfreeze()
    from bot.gc_tuning import CollectionMonitor

    gc.callbacks[:] = [c for c in gc.callbacks if not isinstance(c, CollectionMonitor)]  # installed by freezing_after


async def test_freezes_what_the_load_made_after_it_returns() -> None:
    made: list[object] = []
    frozen_during: list[int] = []

    async def load(n: int) -> str:
        made.extend({"node": i, "edges": [i]} for i in range(n))
        frozen_during.append(gc.get_freeze_count())
        return "agent"

    before = gc.get_freeze_count()
    assert await freezing_after(load, "test")(50_000) == "agent"
    assert frozen_during == [before], "the load itself runs unchanged, freezing comes after"
    assert gc.get_freeze_count() >= before + 100_000, "the loaded objects are out of the collector's sight"


def test_a_full_collection_gets_cheaper_once_long_lived_objects_are_frozen() -> None:
    """The point of it: with a large loaded state, gen-2 time falls (it could stay the same)."""
    state = [{"i": i, "l": [i, str(i)]} for i in range(300_000)]

    def full_collection_s() -> float:
        start = time.perf_counter()
        gc.collect()
        return time.perf_counter() - start

    unfrozen = min(full_collection_s() for _ in range(3))
    freeze_long_lived("test")
    frozen = min(full_collection_s() for _ in range(3))
    assert frozen < unfrozen / 3, f"{frozen * 1000:.1f} ms frozen vs {unfrozen * 1000:.1f} ms"
    assert len(state) == 300_000


def test_installed_once_on_the_rasa_server_start_up() -> None:
    import rasa.core.run

    original = rasa.core.run.load_agent_on_start
    try:
        install_for_rasa_server()
        install_for_rasa_server()
        wrapped = rasa.core.run.load_agent_on_start
        assert wrapped is not original and wrapped.__wrapped__ is original, "wrapped exactly once"
    finally:
        rasa.core.run.load_agent_on_start = original


def test_slow_full_collections_are_logged_with_what_they_walked(caplog: pytest.LogCaptureFixture) -> None:
    from bot.gc_tuning import CollectionMonitor

    monitor = CollectionMonitor("test", slow_ms=0.0, debug=True)
    quick = CollectionMonitor("quick", slow_ms=10_000.0)
    gc.callbacks.extend([monitor, quick])
    gc.disable()  # only the collections this test asks for
    try:
        kept = [{"n": [i]} for i in range(20_000)]
        with caplog.at_level("WARNING", logger="bot.gc_tuning"):
            gc.collect(1)  # a young collection is not timed
            assert monitor.slow == []
            gc.collect(2)
    finally:
        gc.enable()
        gc.callbacks.remove(monitor)
        gc.callbacks.remove(quick)
    assert len(monitor.slow) == 1 and quick.slow == []
    assert "gc.slow what=test generation=2" in caplog.text
    assert "'dict'" in caplog.text and "'list'" in caplog.text, "the walked types are named"
    assert len(kept) == 20_000

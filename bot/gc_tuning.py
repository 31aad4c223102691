"""Garbage collection for long-running servers: no second-long pauses under load.

`make soak` found the Rasa server stopping for 1.05–1.2 s every minute or two at 30 msg/s (and
the relay for up to 0.6 s): full, generation-2 collections walking every object of the loaded
model — TensorFlow, spaCy, the policies — to find cycles among the few that change. Those
objects live as long as the process, so once they are loaded `gc.freeze()` moves them out of
the collector's sight, as CPython's documentation suggests for long-lived start-up state; later
collections walk only what was made since (conversations, requests). Objects in the frozen set
are still freed by reference counting; only cycles among them stay, which for a model loaded
once per process is nothing. The Rasa server's freeze is installed by bot/rasa_patches/gc_tuning.py;
the relay calls `freeze_long_lived` itself.

Measured (soak, 30 msg/s): Rasa's full collections 1.05–1.2 s → 0.44–0.47 s. They come about
twice as often (fewer survivors to compare new objects with), so the total time is similar;
what this buys is a shorter longest wait. The rest is the tracker cache.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


def freeze_long_lived(what: str) -> int:
    """Collect once, then exempt everything alive now from later collections; returns how many."""
    gc.collect()
    gc.freeze()
    count = gc.get_freeze_count()
    log.info("gc.freeze what=%s objects=%d", what, count)
    return count


def freezing_after(load: Callable[..., Awaitable[Any]], what: str) -> Callable[..., Awaitable[Any]]:
    """`load`, then `freeze_long_lived` once it has returned."""

    @functools.wraps(load)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = await load(*args, **kwargs)
        freeze_long_lived(what)
        monitor_collections(what)
        return result

    return wrapper


SLOW_COLLECTION_MS = 100.0


class CollectionMonitor:
    """Times every generation-2 collection and logs the slow ones, so a tail-latency spike in a
    server's log can be told apart from a slow database or model (`gc.slow` lines). With
    `CRS_GC_DEBUG=1` it also names the most numerous object types the collection walked, which is
    how one finds what to keep out of the collector's sight."""

    def __init__(self, what: str, slow_ms: float = SLOW_COLLECTION_MS, debug: bool = False) -> None:
        self.what, self.slow_ms, self.debug = what, slow_ms, debug
        self._started = 0.0
        self.slow: list[float] = []

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
            return
        ms = (time.perf_counter() - self._started) * 1000
        if ms < self.slow_ms:
            return
        self.slow.append(ms)
        walked = gc.get_objects(2)
        log.warning("gc.slow what=%s generation=2 ms=%.0f tracked=%d collected=%d", self.what, ms, len(walked), info.get("collected", 0))
        if self.debug:
            counts = Counter(type(o).__qualname__ for o in walked)
            log.warning("gc.slow.types what=%s top=%s", self.what, counts.most_common(12))


def monitor_collections(what: str) -> CollectionMonitor:
    """Install a `CollectionMonitor` once per process."""
    for callback in gc.callbacks:
        if isinstance(callback, CollectionMonitor):
            return callback
    monitor = CollectionMonitor(what, debug=os.environ.get("CRS_GC_DEBUG") == "1")
    gc.callbacks.append(monitor)
    return monitor

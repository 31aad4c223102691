"""Derived arrays kept beside the model (the detector's weights, the fixed texts' vectors): written
atomically, since a Rasa server, a relay and a test run may build the same one at once, and the
ones for other data swept once they have gone unused for a while."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO


def replace_cached(path: Path, write: Callable[[IO[bytes]], None], stale_after_s: float) -> None:
    """`write` into a temporary file beside `path`, then move it there in one step; afterwards remove
    the files of the same kind (suffix) in that directory untouched for `stale_after_s`. OSError if
    the directory cannot be written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=path.suffix, delete=False) as tmp:
        write(tmp)
    os.chmod(tmp.name, 0o644)
    os.replace(tmp.name, path)
    for old in path.parent.glob(f"*{path.suffix}"):
        if old != path and time.time() - old.stat().st_mtime > stale_after_s:
            old.unlink(missing_ok=True)

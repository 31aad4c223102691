"""A short coverage-guided run of `make fuzz`'s harness (the long one is `make fuzz`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot import PROJECT_ROOT
from tools.fuzz import check


def test_the_harness_accepts_ordinary_and_odd_messages() -> None:
    for text in ["I can't breathe", "", "🤒" * 50, "temp 39.9 C, pulse 130, bp 80/50, spo2 88%", "no chest pain"]:
        check(text)


@pytest.mark.slow
def test_a_short_fuzzing_run_finds_nothing(tmp_path: Path) -> None:
    env = {**os.environ, "CRS_FUZZ_DIR": str(tmp_path), "PYTHONPATH": str(PROJECT_ROOT)}
    run = subprocess.run(
        [sys.executable, "-m", "tools.fuzz", "-runs=3000", "-timeout=30", "-rss_limit_mb=4096", "-seed=1"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 3000 runs" in run.stderr, run.stderr[-2000:]
    assert not list(tmp_path.glob("crash-*")), "a crash was found"
    assert len(list((tmp_path / "corpus").iterdir())) > 100, "seeded with the case messages"

"""Rasa's own checks: `rasa data validate` and the test stories against the trained model."""

from __future__ import annotations

import subprocess

import pytest

from bot import PROJECT_ROOT
from bot.servers import RASA
from bot.settings import MODEL_PATH


def run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([RASA, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_rasa_data_validate() -> None:
    result = run("data", "validate", "--fail-on-warnings")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.mark.slow
def test_rasa_test_stories(tmp_path) -> None:
    result = run(
        "test",
        "core",
        "--model",
        str(MODEL_PATH),
        "--stories",
        "tests/test_stories.yml",
        "--out",
        str(tmp_path),
        "--fail-on-prediction-errors",
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

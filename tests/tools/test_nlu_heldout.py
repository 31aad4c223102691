"""Intent classification on a held-out quarter of data/nlu.yml (trains an NLU model, ~1 min)."""

from __future__ import annotations

import pytest

from bot import PROJECT_ROOT
from tools.nlu_heldout import format_scores, run

pytestmark = pytest.mark.slow


def test_held_out_intents() -> None:
    [score] = run([PROJECT_ROOT / "config.yml"])
    print(format_scores([score]))  # noqa: T201
    # Measured 0.782 accuracy / 0.764 macro F1 with the linear classifier on 2026-11-26 (DIET: 0.782 / 0.757);
    # symptom safety does not depend on these (the extractor routes symptom messages), FAQ answers and yes/no do.
    assert score.accuracy >= 0.75, score.errors
    assert score.macro_f1 >= 0.72, score.errors

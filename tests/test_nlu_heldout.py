"""Intent classification on a held-out quarter of data/nlu.yml (trains an NLU model, ~1 min)."""

from __future__ import annotations

import pytest

from bot import PROJECT_ROOT
from bot.nlu_heldout import format_scores, run

pytestmark = pytest.mark.slow


def test_held_out_intents() -> None:
    [score] = run([PROJECT_ROOT / "config.yml"])
    print(format_scores([score]))  # noqa: T201
    # Measured 0.77 accuracy / 0.74 macro F1 with DIET on 2026-11-26 (margin for TF nondeterminism); symptom safety does not
    # depend on these (the extractor routes symptom messages), FAQ answers and yes/no do.
    assert score.accuracy >= 0.72, score.errors
    assert score.macro_f1 >= 0.68, score.errors

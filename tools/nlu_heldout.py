"""Intent quality on a held-out split of data/nlu.yml, through the whole NLU pipeline.

`python -m tools nlu-heldout [--config A.yml --config B.yml]` splits the NLU data with a fixed
seed (`rasa data split nlu`), trains an NLU-only model per config on the training part
(`rasa train nlu`), scores the held-out part (`rasa test nlu`) and prints accuracy, weighted
and macro F1 and training time, side by side. Our extractor is in the pipeline, so the figures
include its intent routing, as the live bot does.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bot import PROJECT_ROOT
from bot.servers import RASA

SPLIT_SEED = 7
TRAINING_FRACTION = 0.75


@dataclass(frozen=True)
class HeldOutScore:
    config: str
    accuracy: float
    weighted_f1: float
    macro_f1: float
    train_seconds: float
    errors: list[str]


def _rasa(*args: str) -> None:
    result = subprocess.run([RASA, *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(f"rasa {' '.join(args[:2])} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")


def split(work: Path) -> tuple[Path, Path]:
    _rasa(
        "data",
        "split",
        "nlu",
        "--nlu",
        "data/nlu.yml",
        "--training-fraction",
        str(TRAINING_FRACTION),
        "--random-seed",
        str(SPLIT_SEED),
        "--out",
        str(work),
    )
    return work / "training_data.yml", work / "test_data.yml"


def score_config(config: Path, train: Path, test: Path, work: Path) -> HeldOutScore:
    name = config.stem
    t0 = time.monotonic()
    _rasa("train", "nlu", "-c", str(config), "--nlu", str(train), "--out", str(work / f"model-{name}"), "--fixed-model-name", "m")
    seconds = time.monotonic() - t0
    _rasa("test", "nlu", "-m", str(work / f"model-{name}" / "m.tar.gz"), "--nlu", str(test), "--out", str(work / f"report-{name}"))
    report = json.loads((work / f"report-{name}" / "intent_report.json").read_text())
    errors_path = work / f"report-{name}" / "intent_errors.json"
    errors = json.loads(errors_path.read_text()) if errors_path.exists() else []
    return HeldOutScore(
        config=str(config),
        accuracy=report["accuracy"],
        weighted_f1=report["weighted avg"]["f1-score"],
        macro_f1=report["macro avg"]["f1-score"],
        train_seconds=seconds,
        errors=[f"{e['intent']} → {e['intent_prediction']['name']}: {e['text']}" for e in errors],
    )


def run(configs: list[Path]) -> list[HeldOutScore]:
    with tempfile.TemporaryDirectory(prefix="crs-heldout-") as tmp:
        work = Path(tmp)
        train, test = split(work)
        return [score_config(c, train, test, work) for c in configs]


def format_scores(scores: list[HeldOutScore]) -> str:
    lines = [f"{'config':<40} {'accuracy':>8} {'wF1':>6} {'mF1':>6} {'train s':>8}"]
    lines += [f"{s.config:<40} {s.accuracy:8.3f} {s.weighted_f1:6.3f} {s.macro_f1:6.3f} {s.train_seconds:8.1f}" for s in scores]
    return "\n".join(lines)

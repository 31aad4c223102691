"""A learned second opinion on a whole message: does it read like an emergency?

The description matcher (bot/nlu/semantic.py) reads one clause at a time, and a scene often
lives across clauses: "he asked me what hospital we were in. we are in his own kitchen" is
two harmless clauses and one confused man. This detector looks at the message as a whole — its
embedding, the mean of its clauses' embeddings, and how close its closest clause comes to each
symptom's descriptions and to the background — and gives the probability that the writer
describes an emergency. A logistic regression learns that from labelled conversations (the
case files data/semantic.yml lists under `detector.examples`: written cases whose triage is
known), so it generalises from thousands of ways people wrote, not from a phrase list.

It only ever raises: when it is sure enough (`fires_from`) and a clause of the message is a
present emergency candidate, that candidate is recorded, with a reason naming both the clause
and the detector's probability. It never lowers what rules or numbers found.

The weights are derived data, like a Rasa model: trained with scikit-learn (a dependency of
Rasa already, and the reference implementation of the model) and cached in models/, keyed by a
hash of everything they depend on, so a change to the examples, descriptions or model retrains.
Prediction is one dot product in numpy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bot import PROJECT_ROOT
from bot.clinical.knowledge import KnowledgeBaseError
from bot.nlu.cache_files import replace_cached

CACHE_DIR_ENV = "CRS_DETECTOR_CACHE"
DEFAULT_CACHE_DIR = PROJECT_ROOT / "models" / "detector"
FORMAT = 2  # bump when the features or what is trained change
WHOLE_MESSAGE_CHARS = 2000  # the encoder reads 256 tokens at most anyway
STALE_AFTER_S = 24 * 3600  # weights for other data, unused for a day, are removed when new ones are written
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorConfig:
    enabled: bool
    fires_from: float
    examples: tuple[Path, ...]
    c: float  # inverse regularisation strength of the logistic regression
    candidate_from: float = 0.0  # the clause it records must be at least this close to that emergency
    not_with: tuple[str, ...] = ()  # words that make a clause say a good state ("speech is fine"): no candidate
    kind_from: float = 0.0  # the emergency it records must be at least this likely as the kind
    doubt_below: float = 0.0  # a long message it scores below this: its clause reads are asked about, not counted; 0: off
    doubt_clauses: int = 1_000_000  # ... a message of at least this many clauses
    doubt_long_below: float = 0.0  # ... and below this, a message of at least doubt_long_clauses clauses
    doubt_long_clauses: int = 1_000_000

    @classmethod
    def parse(cls, raw: dict[str, Any] | None, where: str) -> DetectorConfig:
        raw = raw or {}
        fires_from = float(raw.get("fires_from", 1.01))
        examples = tuple(PROJECT_ROOT / str(p) for p in raw.get("examples") or ())
        enabled = bool(raw.get("enabled", False)) and bool(examples)
        if enabled and not 0.5 <= fires_from <= 1.0:
            raise KnowledgeBaseError(f"{where}: detector.fires_from must be a probability in [0.5, 1]")
        not_with = tuple(str(w).lower() for w in raw.get("not_with") or ())
        c, candidate_from, kind_from = float(raw.get("c", 1.0)), float(raw.get("candidate_from", 0.0)), float(raw.get("kind_from", 0.0))
        if c <= 0 or not 0.0 <= candidate_from <= 1.0 or not 0.0 <= kind_from <= 1.0:
            raise KnowledgeBaseError(f"{where}: detector.c must be > 0, candidate_from and kind_from in [0, 1]")
        doubt_below, doubt_clauses = float(raw.get("doubt_below", 0.0)), int(raw.get("doubt_clauses", 1_000_000))
        long_below, long_clauses = float(raw.get("doubt_long_below", doubt_below)), int(raw.get("doubt_long_clauses", 1_000_000))
        if not 0.0 <= doubt_below <= long_below < fires_from or not 1 <= doubt_clauses <= long_clauses:
            raise KnowledgeBaseError(
                f"{where}: detector needs 0 <= doubt_below <= doubt_long_below < fires_from and 1 <= doubt_clauses <= doubt_long_clauses"
            )
        return cls(
            enabled,
            fires_from,
            examples,
            c,
            candidate_from,
            not_with,
            kind_from,
            doubt_below=doubt_below,
            doubt_clauses=doubt_clauses,
            doubt_long_below=long_below,
            doubt_long_clauses=long_clauses,
        )


def feature_width(matcher: Any) -> int:
    """How many numbers `features` gives with this matcher."""
    return 2 * matcher.vectors.shape[1] + 2 * len(matcher.columns) + 1


def features(matcher: Any, clauses: list[str], message: str) -> np.ndarray:
    """What the detector sees of one message (see module docstring). `matcher` is a SemanticMatcher."""
    texts = clauses or [message]
    clause_vectors = matcher.embed(texts)
    whole = matcher.embed([message[:WHOLE_MESSAGE_CHARS]])[0]
    sims = clause_vectors @ matcher.vectors.T
    background = (clause_vectors @ matcher.background.T).max(1) if len(matcher.background) else np.zeros(len(texts))
    closest = np.stack([sims[:, cols].max(1) for cols in matcher.columns.values()], 1)  # (clauses, symptoms)
    margin = closest - background[:, None]
    return np.concatenate([whole, clause_vectors.mean(0), closest.max(0), margin.max(0), [background.max()]]).astype(np.float32)


@dataclass(frozen=True)
class EmergencyDetector:
    """p(emergency | message) from a logistic regression over `features`, and which emergency it
    is most like (a second, multinomial one, trained on the messages that carry one emergency)."""

    weights: np.ndarray
    bias: float
    fires_from: float
    kinds: tuple[str, ...] = ()
    kind_weights: np.ndarray | None = None
    kind_bias: np.ndarray | None = None

    def probability(self, x: np.ndarray) -> float:
        return float(1.0 / (1.0 + np.exp(-(float(x @ self.weights) + self.bias))))

    def kind_probabilities(self, x: np.ndarray) -> dict[str, float]:
        """Emergency id → probability that the message describes that one (empty if untrained)."""
        if self.kind_weights is None or self.kind_bias is None or not self.kinds:
            return {}
        logits = self.kind_weights @ x + self.kind_bias
        odds = np.exp(logits - logits.max())
        return dict(zip(self.kinds, (odds / odds.sum()).tolist(), strict=True))

    @classmethod
    def load_or_train(cls, config: DetectorConfig, matcher: Any, clauses_of: Any, depends_on: tuple[Path, ...] = ()) -> EmergencyDetector:
        """The cached weights for these examples, descriptions and model, trained first if missing.
        `clauses_of(text)` splits a message into clause texts the way the extractor does;
        `depends_on`: further files that shape them (the language rules: shorthand, clauses)."""
        key = _key(config, matcher, depends_on)
        cache = Path(os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR) / f"{key}.npz"
        if cache.exists():
            try:
                return cls._load(cache, config, matcher)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:  # truncated, empty, another shape: train again
                log.warning("detector cache %s unusable (%s); training again", cache, exc)
        x, y, kind = training_set(config.examples, matcher, clauses_of)
        weights, bias = fit(x, y, config.c)
        sure = [i for i, k in enumerate(kind) if k]
        kinds, kind_weights, kind_bias = fit_kinds(x[sure], [kind[i] for i in sure], config.c)
        replace_cached(
            cache,
            lambda f: np.savez(
                f, weights=weights, bias=np.float64(bias), kinds=np.array(kinds), kind_weights=kind_weights, kind_bias=kind_bias
            ),
            STALE_AFTER_S,
        )
        return cls(weights, bias, config.fires_from, kinds, kind_weights, kind_bias)

    @classmethod
    def _load(cls, cache: Path, config: DetectorConfig, matcher: Any) -> EmergencyDetector:
        """Cached weights, checked against the features they must fit."""
        with np.load(cache) as saved:
            weights, bias = saved["weights"], float(saved["bias"])
            kinds = tuple(str(k) for k in saved["kinds"])
            kind_weights, kind_bias = saved["kind_weights"], saved["kind_bias"]
        width = feature_width(matcher)
        if weights.shape != (width,) or kind_weights.shape != (len(kinds), width) or kind_bias.shape != (len(kinds),):
            raise ValueError(f"weights of shape {weights.shape} for {width} features")
        if set(kinds) - matcher.emergency:
            raise ValueError(f"unknown emergencies {sorted(set(kinds) - matcher.emergency)}")
        return cls(weights, bias, config.fires_from, kinds, kind_weights, kind_bias)


def training_set(paths: tuple[Path, ...], matcher: Any, clauses_of: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One row per single-message case: a conversation's triage says what its one message meant
    (in longer ones we do not know which message carried it). With each, the one emergency it
    describes when it describes exactly one ("" otherwise)."""
    rows, labels, kinds = [], [], []
    for path in paths:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                case = json.loads(line)
                messages, triage = case["messages"], case["expect"]["triage"]
            except (ValueError, KeyError, TypeError) as exc:
                raise KnowledgeBaseError(f"{path}:{n}: not a case with messages and expect.triage") from exc
            if len(messages) == 1 and messages[0].strip():
                rows.append(features(matcher, clauses_of(messages[0]), messages[0]))
                labels.append(triage == "emergency")
                emergencies = [s for s in case["expect"].get("symptoms") or () if s in matcher.emergency]
                kinds.append(emergencies[0] if triage == "emergency" and len(emergencies) == 1 else "")
    if len(set(labels)) < 2:
        raise KnowledgeBaseError("detector.examples must hold emergency and non-emergency single-message cases")
    return np.stack(rows), np.array(labels), kinds


def fit(x: np.ndarray, y: np.ndarray, c: float) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - only when (re)training

    model = LogisticRegression(C=c, max_iter=5000).fit(x, y)
    return model.coef_[0].astype(np.float32), float(model.intercept_[0])


def fit_kinds(x: np.ndarray, kinds: list[str], c: float) -> tuple[tuple[str, ...], np.ndarray, np.ndarray]:
    """Which emergency: a multinomial logistic regression (empty when fewer than two kinds)."""
    if len(set(kinds)) < 2:
        return (), np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.float32)
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - only when (re)training

    model = LogisticRegression(C=c, max_iter=5000).fit(x, kinds)
    return tuple(str(k) for k in model.classes_), model.coef_.astype(np.float32), model.intercept_.astype(np.float32)


def _key(config: DetectorConfig, matcher: Any, depends_on: tuple[Path, ...] = ()) -> str:
    digest = hashlib.sha256(f"format {FORMAT} c {config.c}\n".encode())
    for code in (Path(__file__), Path(__file__).with_name("clauses.py"), *depends_on):  # what a feature is, and what a clause is
        digest.update(code.read_bytes())
    for path in config.examples:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    for text in [*matcher.texts, "\0background", *matcher.config.background]:
        digest.update(text.encode() + b"\0")
    digest.update(json.dumps(sorted(matcher.config.checksums.items())).encode())
    return digest.hexdigest()[:24]


def main() -> None:
    """Build (or find) the cached detector for the configured data: `make model` runs this so
    the first message after a start does not wait for training."""
    from bot.nlu.extractor import SymptomExtractor  # noqa: PLC0415 - the extractor imports this module

    extractor = SymptomExtractor()
    if extractor.detector is None:
        print("detector: disabled in data/semantic.yml")  # noqa: T201 - a command's output
        return
    print(f"detector: ready, fires from {extractor.detector.fires_from}, {len(extractor.detector.weights)} features")  # noqa: T201


if __name__ == "__main__":
    main()

"""The semantic layer: a clause is compared by meaning with the knowledge base's descriptions.

Patients describe a scene ("people in the corner who aren't there"), an event ("went down like
a sack of potatoes") or a feeling ("an elephant on my chest"), and no phrase list keeps up. Each
symptom in data/phrasings.yml carries `descriptions:` written the way people talk; each clause of
a message is embedded (bot/nlu/encoder.py) and scored against them by cosine similarity. A
clause counts as a symptom when its best description is at least that symptom's threshold and
beats every everyday `background` sentence of data/semantic.yml by the margin; an emergency
candidate a little below its threshold becomes a question to ask, not a guess. Thresholds live
in data/semantic.yml so a clinician can change them; emergencies may have lower ones.

The extractor decides the assertion (negated, hypothetical, past, someone else) with the same
ConText rules as for phrases; this module only scores meaning.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bot import PROJECT_ROOT
from bot.clinical.knowledge import KnowledgeBase, KnowledgeBaseError, _read_yaml, _require, _str_list
from bot.nlu.cache_files import replace_cached
from bot.nlu.detector import DetectorConfig

DEFAULT_SEMANTIC_PATH = PROJECT_ROOT / "data" / "semantic.yml"
SEMANTIC_ENV = "CRS_SEMANTIC_CONFIG"
VECTORS_ENV = "CRS_EMBEDDING_CACHE"
DEFAULT_VECTORS_DIR = PROJECT_ROOT / "models" / "embeddings"
VECTORS_STALE_AFTER_S = 24 * 3600  # vectors of other texts, unused for a day, go when new ones are written
CACHE_SIZE = 4096
log = logging.getLogger(__name__)
# Words that make a description (or a clause) say the opposite of its content words.
_NEGATION_RE = re.compile(r"\b(?:not|no|never|nobody|nothing|none|without|cannot|cant|wont|dont|doesnt|didnt|isnt|arent)\b|n't\b")


def plain_words(text: str) -> str:
    """Lower-case words separated by single spaces, apostrophes dropped ("There's" → "theres"):
    the form in which corroborating cues and messages are compared."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower().replace("’", "").replace("'", "")).strip()


@dataclass(frozen=True)
class SemanticConfig:
    enabled: bool
    model_name: str
    model_revision: str
    package: str
    checksums: dict[str, str]
    threshold: float
    ask_from: float
    margin: float
    per_symptom: dict[str, dict[str, float]]
    background: tuple[str, ...]
    path: Path = field(default=DEFAULT_SEMANTIC_PATH)
    agreeing_clauses: int = 0  # 0: off
    cue_from: float = 1.0  # a candidate this close counts when the message says one of its cues
    cues: dict[str, tuple[str, ...]] = field(default_factory=dict)
    partial_from: float = 0.0  # a read of the words a phrase left over counts from this similarity up (and the usual tests)
    agreeing_unsure: int = 0  # this many clauses naming one emergency count even below the margin; 0: off
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # emergencies that are faces of one thing
    group_agreeing: int = 0  # this many clauses, each pointing to some emergency of one group, count; 0: off
    agreeing_below_clauses: int = 1_000_000  # clauses agree only in a message shorter than this
    measured: dict[str, tuple[str, ...]] = field(default_factory=dict)  # reading kind → symptoms its number decides
    as_usual: tuple[str, ...] = ()  # a clause saying one of these (and no negation) is read as no symptom
    beside_sure_from: float = 0.0  # an emergency read at least this close (or said in words or numbers) is sure; 0: off
    beside_read_from: float = 0.0  # then another, weaker read of that message needs this similarity
    beside_classes: tuple[str, ...] = ()  # the classes of the reads that rule applies to
    detector: DetectorConfig = field(default_factory=lambda: DetectorConfig(False, 1.01, (), 1.0))

    def says_as_usual(self, text: str, words: tuple[str, ...] | None = None) -> bool:
        """Whether `text` says one of `words` (default `as_usual`; words in `plain_words` form) and
        no negation turns it round."""
        flat = f" {plain_words(text)} "
        contrary = _NEGATION_RE.search(text.lower().replace("’", "'")) or " far from " in flat or " unlike " in flat
        return any(f" {w} " in flat for w in (self.as_usual if words is None else words)) and not contrary

    def corroborating_cue(self, symptom: str, text: str) -> str | None:
        """The first of the symptom's corroborating cues said in `text`, if any."""
        flat = f" {plain_words(text)} "
        return next((c for c in self.cues.get(symptom, ()) if f" {c} " in flat), None)

    def threshold_for(self, symptom: str) -> float:
        return float(self.per_symptom.get(symptom, {}).get("threshold", self.threshold))

    def ask_from_for(self, symptom: str) -> float:
        return float(self.per_symptom.get(symptom, {}).get("ask_from", self.ask_from))


def parse_semantic_config(raw: dict[str, Any], kb: KnowledgeBase | None = None, path: Path = DEFAULT_SEMANTIC_PATH) -> SemanticConfig:
    """Validate data/semantic.yml (and that its per-symptom entries name known symptoms)."""
    where = str(path)
    model = _require(raw, "model", where)
    checksums = _require(model, "sha256", f"{where}: model")
    if not isinstance(checksums, dict) or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in checksums.values()):
        raise KnowledgeBaseError(f"{where}: model.sha256 must map file names to 64 hex digits")
    for required in ("model.safetensors", "tokenizer.json"):
        if required not in checksums:
            raise KnowledgeBaseError(f"{where}: model.sha256 must pin {required}")
    defaults = _require(raw, "defaults", where)
    numbers = {}
    for key in ("threshold", "ask_from", "margin"):
        value = _require(defaults, key, f"{where}: defaults")
        if not isinstance(value, (int, float)) or not -1.0 <= value <= 1.0:
            raise KnowledgeBaseError(f"{where}: defaults.{key} = {value!r} is not a similarity in [-1, 1]")
        numbers[key] = float(value)
    if numbers["ask_from"] > numbers["threshold"]:
        raise KnowledgeBaseError(f"{where}: defaults.ask_from must not exceed defaults.threshold")
    per_symptom: dict[str, dict[str, float]] = {}
    for sid, entry in (raw.get("symptoms") or {}).items():
        if kb is not None and sid not in kb.symptoms:
            raise KnowledgeBaseError(f"{where}: symptoms.{sid} is not a symptom of the knowledge base")
        if not isinstance(entry, dict) or set(entry) - {"threshold", "ask_from"}:
            raise KnowledgeBaseError(f"{where}: symptoms.{sid} may only set threshold and ask_from")
        per_symptom[sid] = {k: float(v) for k, v in entry.items()}
        if per_symptom[sid].get("ask_from", numbers["ask_from"]) > per_symptom[sid].get("threshold", numbers["threshold"]):
            raise KnowledgeBaseError(f"{where}: symptoms.{sid}: ask_from must not exceed threshold")
    corroboration = raw.get("corroboration") or {}
    cues: dict[str, tuple[str, ...]] = {}
    for sid, phrases in (corroboration.get("cues") or {}).items():
        if kb is not None and sid not in kb.symptoms:
            raise KnowledgeBaseError(f"{where}: corroboration.cues.{sid} is not a symptom of the knowledge base")
        cues[sid] = tuple(plain_words(p) for p in _str_list(phrases, f"cues.{sid}"))
    groups = {str(k): _str_list(v, f"corroboration.groups.{k}") for k, v in (corroboration.get("groups") or {}).items()}
    if kb is not None and {sid for ids in groups.values() for sid in ids} - set(kb.symptoms):
        raise KnowledgeBaseError(f"{where}: corroboration.groups names an unknown symptom")
    measured = {str(k): _str_list(v, f"measured.{k}") for k, v in (raw.get("measured") or {}).items()}
    detector = DetectorConfig.parse(raw.get("detector"), where)
    beside = raw.get("beside_emergency") or {}
    if kb is not None and set(_str_list(beside.get("classes"), "beside_emergency.classes")) - {s.cls for s in kb.symptoms.values()}:
        raise KnowledgeBaseError(f"{where}: beside_emergency.classes names an unknown class")
    unknown = {sid for ids in measured.values() for sid in ids} - set(kb.symptoms) if kb is not None else set()
    if unknown:
        raise KnowledgeBaseError(f"{where}: measured names unknown symptoms {sorted(unknown)}")
    return SemanticConfig(
        agreeing_clauses=int(corroboration.get("agreeing_clauses", 0)),
        agreeing_unsure=int(corroboration.get("agreeing_unsure", 0)),
        groups=groups,
        group_agreeing=int(corroboration.get("group_agreeing", 0)),
        agreeing_below_clauses=int(corroboration.get("agreeing_below_clauses", 1_000_000)),
        partial_from=float(defaults.get("partial_from", 0.0)),
        beside_sure_from=float(beside.get("sure_from", 0.0)),
        beside_read_from=float(beside.get("read_from", 0.0)),
        beside_classes=_str_list(beside.get("classes"), "beside_emergency.classes"),
        detector=replace(detector, not_with=tuple(plain_words(w) for w in detector.not_with)),
        measured=measured,
        as_usual=tuple(plain_words(w) for w in _str_list(raw.get("as_usual"), "as_usual")),
        cue_from=float(corroboration.get("cue_from", 1.0)),
        cues=cues,
        enabled=bool(raw.get("enabled", True)),
        model_name=str(_require(model, "name", f"{where}: model")),
        model_revision=str(model.get("revision", "")),
        package=str(model.get("package", "")),
        checksums={str(k): str(v) for k, v in checksums.items()},
        threshold=numbers["threshold"],
        ask_from=numbers["ask_from"],
        margin=numbers["margin"],
        per_symptom=per_symptom,
        background=_str_list(raw.get("background"), "background"),
        path=path,
    )


def semantic_path() -> Path:
    return Path(os.environ.get(SEMANTIC_ENV) or DEFAULT_SEMANTIC_PATH)


def load_semantic_config(kb: KnowledgeBase | None = None, path: Path | str | None = None) -> SemanticConfig:
    return parse_semantic_config(_read_yaml(Path(path) if path else semantic_path()), kb, Path(path) if path else semantic_path())


def is_negated_text(text: str) -> bool:
    """Whether a description itself says "not ..." ("the words won't come out")."""
    return bool(_NEGATION_RE.search(text.lower().replace("’", "'")))


@dataclass(frozen=True)
class ClauseScore:
    """How close one clause is to the knowledge base, by meaning."""

    symptom: str  # the symptom of the closest description
    score: float
    description: str
    background: float  # best similarity to an everyday background sentence
    hit: bool  # at or over the symptom's threshold and beating the background by the margin
    ask: bool  # an emergency candidate in [ask_from, threshold): ask the patient
    clear: bool  # beats every background sentence by the margin (whatever the threshold)
    emergencies: tuple[tuple[str, float], ...] = ()  # every emergency's closest description, closest first


def encode_once(encoder: Any, texts: list[str], checksums: dict[str, str]) -> np.ndarray:
    """`encoder.encode(texts)` for the texts every server embeds at start (the descriptions, the
    background), kept in VECTORS_DIR under a hash of the model's checksums, the encoder's code
    and the texts: the same arrays (saved exactly, float32), without seconds of start-up in each
    process that builds the extractor. Written by `make model` (and the image build); a cache
    that cannot be read or written is only slower."""
    digest = hashlib.sha256(json.dumps(sorted(checksums.items())).encode())
    digest.update(Path(__file__).with_name("encoder.py").read_bytes())
    for text in texts:
        digest.update(text.encode() + b"\0")
    directory = Path(os.environ.get(VECTORS_ENV) or DEFAULT_VECTORS_DIR)
    path = directory / f"{digest.hexdigest()[:24]}.npy"
    try:
        vectors = np.load(path, allow_pickle=False)
        if vectors.shape == (len(texts), encoder.dim) and vectors.dtype == np.float32:
            return vectors
    except (OSError, ValueError, AttributeError):
        pass
    vectors = encoder.encode(texts)
    try:
        replace_cached(path, lambda f: np.save(f, vectors, allow_pickle=False), VECTORS_STALE_AFTER_S)
    except OSError as exc:  # a read-only image without them: computed at each start, as before
        log.warning("semantic.vectors_not_cached dir=%s type=%s", directory, type(exc).__name__)
    return vectors


@lru_cache(maxsize=2)
def _shared_encoder(checksums: tuple[tuple[str, str], ...]) -> Any:
    from bot.nlu.encoder import MiniLMEncoder  # noqa: PLC0415 - loads the model only when used

    return MiniLMEncoder.from_package(dict(checksums))


class SemanticMatcher:
    """Scores clauses against every symptom description (see module docstring)."""

    def __init__(self, kb: KnowledgeBase, config: SemanticConfig, encoder: Any | None = None) -> None:
        self.kb = kb
        self.config = config
        # the packaged model's vectors of the fixed texts are kept on disk; an encoder given (tests) is asked each time
        cached = encoder is None
        self.encoder = encoder or _shared_encoder(tuple(sorted(config.checksums.items())))
        self.owner: list[str] = []
        self.texts: list[str] = []
        for s in kb.symptoms.values():
            for d in s.descriptions:
                self.owner.append(s.id)
                self.texts.append(d)
        if not self.texts:
            raise KnowledgeBaseError(f"{kb.path}: no symptom has descriptions for the semantic layer")
        self.columns = {sid: [i for i, o in enumerate(self.owner) if o == sid] for sid in dict.fromkeys(self.owner)}
        self.negated = np.array([is_negated_text(t) for t in self.texts])
        encode = (lambda texts: encode_once(self.encoder, texts, config.checksums)) if cached else self.encoder.encode
        self.vectors = encode(self.texts)
        self.background = encode(list(config.background) or ["hello"])
        self.emergency = {s.id for s in kb.symptoms.values() if s.cls == "emergency"}
        self._emergency_columns = {sid: cols for sid, cols in self.columns.items() if sid in self.emergency}
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def embed(self, clauses: list[str]) -> np.ndarray:
        """Clause vectors, computed in one batch for those not seen recently. The result is built
        before the cache evicts, so a batch larger than the cache (or one that evicts its own
        older keys) still gets every vector."""
        keys = [c.strip().lower() for c in clauses]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        fresh = dict(zip(missing, self.encoder.encode(missing), strict=True)) if missing else {}
        vectors = [fresh[k] if k in fresh else self._cache[k] for k in keys]
        for k, v in zip(keys, vectors, strict=True):
            self._cache[k] = v
            self._cache.move_to_end(k)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return np.stack(vectors) if keys else np.zeros((0, self.vectors.shape[1]), np.float32)

    def score(self, clauses: list[str]) -> list[tuple[ClauseScore, bool]]:
        """For each clause: its ClauseScore and whether the winning description is itself negated."""
        if not clauses:
            return []
        vectors = self.embed(clauses)
        sims = vectors @ self.vectors.T  # (clauses, descriptions)
        bg = (vectors @ self.background.T).max(1) if len(self.background) else np.full(len(clauses), -1.0)
        out = []
        for row, background in zip(sims, bg, strict=True):
            best = int(row.argmax())
            symptom, value = self.owner[best], float(row[best])
            threshold = self.config.threshold_for(symptom)
            clear = value >= float(background) + self.config.margin
            hit = clear and value >= threshold
            ask = (not hit) and symptom in self.emergency and value >= self.config.ask_from_for(symptom) and value > float(background)
            emergencies = tuple(
                sorted(((sid, round(float(row[cols].max()), 3)) for sid, cols in self._emergency_columns.items()), key=lambda e: -e[1])
            )
            out.append(
                (
                    ClauseScore(symptom, round(value, 3), self.texts[best], round(float(background), 3), hit, ask, clear, emergencies),
                    bool(self.negated[best]),
                )
            )
        return out

"""The symptom knowledge base (`data/clinical.yml` + `data/phrasings.yml`) and language rules (`data/language.yml`).

Both the NLU component and the triage rules load these through here, so every clinical fact
has exactly one home. Loading validates the files and names the bad entry, because a typo in a
clinician-edited file must fail loudly at start-up, never silently drop a symptom.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

from bot import PROJECT_ROOT

DEFAULT_KB_PATH = PROJECT_ROOT / "data" / "clinical.yml"
DEFAULT_LANGUAGE_PATH = PROJECT_ROOT / "data" / "language.yml"
KB_ENV = "CRS_KNOWLEDGE_BASE"
LANGUAGE_ENV = "CRS_LANGUAGE_RULES"

SYMPTOM_CLASSES = ("emergency", "serious", "mild")
LEVELS = ("none", "monitor", "urgent", "emergency")
LEVEL_RANK = {level: i for i, level in enumerate(LEVELS)}
CONTEXT_CATEGORIES = ("negated", "hypothetical", "historical", "pseudo", "worsening", "experiencer", "nonpatient", "terminate")
DIRECTIONS = ("forward", "backward", "both")


class KnowledgeBaseError(ValueError):
    """A knowledge-base or language file is malformed; the message names the entry."""


@dataclass(frozen=True)
class Symptom:
    id: str
    cls: str
    label: str
    phrases: tuple[str, ...]
    absent: tuple[str, ...] = ()
    not_when: tuple[str, ...] = ()  # a phrase inside one of these is not this symptom ("shake him awake")
    subsumes: tuple[str, ...] = ()
    # words of this symptom that belong to another when that one is present ("shaking" beside a seizure)
    gives_way_to: dict[str, frozenset[str]] = field(default_factory=dict)
    descriptions: tuple[str, ...] = ()  # how people describe it, for the semantic layer
    ask: str = ""  # the yes/no question asked when the semantic layer is unsure
    # (SNOMED CT concept id, preferred term): how the FHIR export codes it; required when loading, so every symptom is mapped
    snomed: tuple[str, str] | None = None


@dataclass(frozen=True)
class Therapy:
    id: str
    name: str
    kind: str
    names: tuple[str, ...]
    source: str = "article"
    rxnorm: tuple[str, str] | None = None  # (RxNorm ingredient RxCUI, name), only where known; the FHIR export falls back to text


@dataclass(frozen=True)
class TherapyKind:
    id: str
    label: str
    highest_risk: bool
    names: tuple[str, ...]


@dataclass(frozen=True)
class ContextRule:
    literal: str
    category: str
    direction: str = "forward"
    max_scope: int | None = None
    ends: tuple[str, ...] = ()
    not_after: frozenset[str] = frozenset()  # right after these words and before a therapy, no trigger ("any of that treatment")
    needs_date: bool = False  # a past cue that closes only a dated episode ("it settled" after "3 weeks ago")
    closes: bool = False  # said alone in a sentence, closes the dated sentence before it ("It settled.")
    keep: int | None = None  # only the first `keep` words are the cue; the rest must follow it ("someone had | a seizure")
    needs_past: bool = False  # reaching forward, a past-tense verb must come before the mention ("2 weeks ago I had a fever")


@dataclass(frozen=True)
class LanguageRules:
    context_rules: tuple[ContextRule, ...]
    default_max_scope: int
    question_starters: frozenset[str]
    question_present_cues: tuple[str, ...]
    shorthand: dict[str, str]
    protected_words: frozenset[str]
    denial_words: frozenset[str] = frozenset()
    recurrence_words: tuple[tuple[str, ...], ...] = ()
    complaint_words: frozenset[str] = frozenset()  # denied at a clause's end, they deny it ("chest doesn't hurt")
    now_words: tuple[tuple[str, ...], ...] = ()  # a later denial with one of these says the symptom is over
    past_anchors: tuple[str, ...] = ()  # regexes dating an episode days or more back ("3 weeks ago")
    today_words: tuple[str, ...] = ()  # regexes: a sentence saying one of these is about today
    strangers: frozenset[str] = frozenset()  # the subject of a symptom that is someone else ("a man collapsed")
    strangers_skip: frozenset[str] = frozenset()  # symptoms whose scenes are full of strangers ("a man in the corner")
    relatives: frozenset[str] = frozenset()  # ... and these too when the writer says they are the patient
    writer_is_patient: tuple[str, ...] = ()  # regexes: the writer says they are the patient ("I'm the one on Kymriah")
    path: Path = field(default=DEFAULT_LANGUAGE_PATH)


@dataclass(frozen=True)
class KnowledgeBase:
    symptoms: dict[str, Symptom]
    thresholds: dict[str, dict[str, Any]]
    classes: dict[str, dict[str, str]]
    worsening_level: str
    therapies: tuple[Therapy, ...]
    therapy_kinds: dict[str, TherapyKind]
    therapy_denial_only: tuple[str, ...]
    therapy_not_now: tuple[str, ...] = ()  # "my CAR-T isn't until March", "stopped in 2019": not on it now
    path: Path = field(default=DEFAULT_KB_PATH)

    def symptom_class(self, symptom_id: str) -> str:
        return self.symptoms[symptom_id].cls

    def ids_of_class(self, cls: str) -> list[str]:
        return [s.id for s in self.symptoms.values() if s.cls == cls]

    def threshold(self, group: str, name: str) -> Any:
        try:
            return self.thresholds[group][name]
        except KeyError as exc:
            raise KnowledgeBaseError(f"threshold {group}.{name} missing in {self.path}") from exc

    def therapy(self, therapy_id: str) -> Therapy | None:
        return next((t for t in self.therapies if t.id == therapy_id), None)


def _require(mapping: dict[str, Any], key: str, where: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise KnowledgeBaseError(f"{where}: missing key {key!r}")
    return mapping[key]


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise KnowledgeBaseError(f"{where}: expected a list of non-empty strings, got {value!r}")
    return tuple(v.strip() for v in value)


def _coded(value: Any, where: str) -> tuple[str, str]:
    """A `{code: ..., display: ...}` entry as (code, display): numeric codes only (SNOMED CT ids, RxCUIs), so a typo fails here."""
    if not isinstance(value, dict) or set(value) != {"code", "display"}:
        raise KnowledgeBaseError(f"{where}: expected {{code: ..., display: ...}}, got {value!r}")
    code, display = str(value["code"]).strip(), str(value["display"] or "").strip()
    if not code.isdigit() or not display:
        raise KnowledgeBaseError(f"{where}: code must be digits and display non-empty, got {value!r}")
    return code, display


def parse_knowledge_base(raw: dict[str, Any], path: Path = DEFAULT_KB_PATH) -> KnowledgeBase:
    """Validate the YAML structure and build the typed knowledge base."""
    where = str(path)
    symptoms: dict[str, Symptom] = {}
    for sid, entry in (_require(raw, "symptoms", where) or {}).items():
        cls = _require(entry, "class", f"{where}: symptom {sid}")
        if cls not in SYMPTOM_CLASSES:
            raise KnowledgeBaseError(f"{where}: symptom {sid} has unknown class {cls!r}")
        phrases = _str_list(_require(entry, "phrases", f"{where}: symptom {sid}"), f"symptom {sid}")
        if not phrases:
            raise KnowledgeBaseError(f"{where}: symptom {sid} has no phrases")
        symptoms[sid] = Symptom(
            id=sid,
            cls=cls,
            label=str(entry.get("label", sid.replace("_", " "))),
            phrases=phrases,
            absent=_str_list(entry.get("absent"), f"symptom {sid}.absent"),
            not_when=_str_list(entry.get("not_when"), f"symptom {sid}.not_when"),
            subsumes=_str_list(entry.get("subsumes"), f"symptom {sid}.subsumes"),
            gives_way_to={
                str(k): frozenset(w.lower() for w in _str_list(v, f"symptom {sid}.gives_way_to.{k}"))
                for k, v in (entry.get("gives_way_to") or {}).items()
            },
            descriptions=_str_list(entry.get("descriptions"), f"symptom {sid}.descriptions"),
            ask=str(entry.get("ask") or ""),
            snomed=_coded(_require(entry, "snomed", f"{where}: symptom {sid}"), f"{where}: symptom {sid}.snomed"),
        )
        if cls == "emergency" and symptoms[sid].descriptions and not symptoms[sid].ask:
            raise KnowledgeBaseError(f"{where}: emergency symptom {sid} has descriptions but no `ask` question")
    for s in symptoms.values():
        for other in s.subsumes:
            if other not in symptoms:
                raise KnowledgeBaseError(f"{where}: {s.id} subsumes unknown symptom {other!r}")
        for other in s.gives_way_to:
            if other not in symptoms:
                raise KnowledgeBaseError(f"{where}: {s.id} gives way to unknown symptom {other!r}")
    classes = _require(raw, "classes", where)
    for cls in SYMPTOM_CLASSES:
        entry = _require(classes, cls, f"{where}: classes")
        for key, level in entry.items():
            if level not in LEVELS:
                raise KnowledgeBaseError(f"{where}: classes.{cls}.{key} = {level!r} is not a level")
    worsening = raw.get("worsening_level", "urgent")
    if worsening not in LEVELS:
        raise KnowledgeBaseError(f"{where}: worsening_level {worsening!r} is not a level")
    kinds = {
        kid: TherapyKind(
            id=kid,
            label=str(_require(k, "label", f"{where}: therapy kind {kid}")),
            highest_risk=bool(k.get("highest_risk", False)),
            names=_str_list(k.get("names"), f"therapy kind {kid}"),
        )
        for kid, k in (_require(raw, "therapy_kinds", where) or {}).items()
    }
    therapies = []
    for t in _require(raw, "therapies", where) or []:
        tid = _require(t, "id", f"{where}: therapy")
        kind = _require(t, "kind", f"{where}: therapy {tid}")
        if kind not in kinds:
            raise KnowledgeBaseError(f"{where}: therapy {tid} has unknown kind {kind!r}")
        therapies.append(
            Therapy(
                id=tid,
                name=str(_require(t, "name", f"{where}: therapy {tid}")),
                kind=kind,
                names=_str_list(_require(t, "names", f"{where}: therapy {tid}"), f"therapy {tid}"),
                source=str(t.get("source", "article")),
                rxnorm=_coded(t["rxnorm"], f"{where}: therapy {tid}.rxnorm") if t.get("rxnorm") is not None else None,
            )
        )
    return KnowledgeBase(
        symptoms=symptoms,
        thresholds=_require(raw, "thresholds", where),
        classes=classes,
        worsening_level=worsening,
        therapies=tuple(therapies),
        therapy_kinds=kinds,
        therapy_denial_only=_str_list(raw.get("therapy_denial_only"), "therapy_denial_only"),
        therapy_not_now=_str_list(raw.get("therapy_not_now"), "therapy_not_now"),
        path=path,
    )


def parse_language_rules(raw: dict[str, Any], path: Path = DEFAULT_LANGUAGE_PATH) -> LanguageRules:
    """Validate the context rules (medspaCy-style: whitelisted keys, known categories)."""
    where = str(path)
    allowed = {"literal", "category", "direction", "max_scope", "ends", "not_after", "needs_date", "closes", "keep", "needs_past"}
    rules = []
    for i, r in enumerate(_require(raw, "context_rules", where)):
        if not isinstance(r, dict):
            raise KnowledgeBaseError(f"{where}: context rule #{i} is not a mapping")
        extra = set(r) - allowed
        if extra:
            raise KnowledgeBaseError(f"{where}: context rule {r.get('literal')!r} has unknown keys {sorted(extra)}")
        literal = _require(r, "literal", f"{where}: context rule #{i}")
        category = _require(r, "category", f"{where}: context rule {literal!r}")
        if category not in CONTEXT_CATEGORIES:
            raise KnowledgeBaseError(f"{where}: context rule {literal!r} has unknown category {category!r}")
        # A terminator ends scopes from both sides unless it says which direction it stops.
        direction = r.get("direction", "both" if category == "terminate" else "forward")
        if direction not in DIRECTIONS:
            raise KnowledgeBaseError(f"{where}: context rule {literal!r} has unknown direction {direction!r}")
        ends = _str_list(r.get("ends"), f"context rule {literal!r}.ends")
        if (category == "terminate") != bool(ends):
            raise KnowledgeBaseError(f"{where}: context rule {literal!r}: `ends` goes with category terminate only")
        for e in ends:
            if e not in CONTEXT_CATEGORIES:
                raise KnowledgeBaseError(f"{where}: context rule {literal!r} ends unknown category {e!r}")
        not_after = frozenset(w.lower() for w in _str_list(r.get("not_after"), f"context rule {literal!r}.not_after"))
        rules.append(
            ContextRule(
                str(literal),
                category,
                direction,
                r.get("max_scope"),
                ends,
                not_after,
                bool(r.get("needs_date", False)),
                bool(r.get("closes", False)),
                int(r["keep"]) if r.get("keep") is not None else None,
                bool(r.get("needs_past", False)),
            )
        )
    question = raw.get("question") or {}
    return LanguageRules(
        context_rules=tuple(rules),
        default_max_scope=int(raw.get("default_max_scope", 8)),
        question_starters=frozenset(_str_list(question.get("starters"), "question.starters")),
        question_present_cues=_str_list(question.get("present_cues"), "question.present_cues"),
        shorthand={str(k).lower(): str(v).lower() for k, v in (raw.get("shorthand") or {}).items()},
        protected_words=frozenset(w.lower() for w in _str_list(raw.get("protected_words"), "protected_words")),
        denial_words=frozenset(w.lower() for w in _str_list(raw.get("denial_words"), "denial_words")),
        recurrence_words=_word_sequences(raw.get("recurrence_words"), "recurrence_words"),
        complaint_words=frozenset(w.lower() for w in _str_list(raw.get("complaint_words"), "complaint_words")),
        now_words=_word_sequences(raw.get("now_words"), "now_words"),
        past_anchors=_regex_list(raw.get("past_anchors"), "past_anchors"),
        today_words=_regex_list(raw.get("today_words"), "today_words"),
        strangers=frozenset(w.lower() for w in _str_list(raw.get("strangers"), "strangers")),
        strangers_skip=frozenset(_str_list(raw.get("strangers_skip"), "strangers_skip")),
        relatives=frozenset(w.lower() for w in _str_list(raw.get("relatives"), "relatives")),
        writer_is_patient=_regex_list(raw.get("writer_is_patient"), "writer_is_patient"),
        path=path,
    )


def _word_sequences(value: Any, where: str) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(w.lower().split()) for w in _str_list(value, where))


def _regex_list(value: Any, where: str) -> tuple[str, ...]:
    patterns = _str_list(value, where)
    for p in patterns:
        try:
            re.compile(p)
        except re.error as exc:
            raise KnowledgeBaseError(f"{where}: bad regular expression {p!r}: {exc}") from exc
    return patterns


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        with path.open(encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except (OSError, yaml.YAMLError) as exc:
        raise KnowledgeBaseError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise KnowledgeBaseError(f"{path}: expected a mapping at the top level")
    return data


def kb_path() -> Path:
    return Path(os.environ.get(KB_ENV) or DEFAULT_KB_PATH)


def language_path() -> Path:
    return Path(os.environ.get(LANGUAGE_ENV) or DEFAULT_LANGUAGE_PATH)


# What a phrasings file may say about each entry; everything else about it is a clinical fact.
PHRASING_KEYS = {
    "symptoms": {"phrases", "absent", "descriptions", "not_when", "ask", "gives_way_to"},
    "therapies": {"names"},
    "therapy_kinds": {"names"},
}


def read_knowledge_base(path: Path) -> dict[str, Any]:
    """The clinical file, with the phrasings file it names (`phrasings:`, beside it) merged in.

    Facts and phrasings are apart so that a clinician signs off a short file: every symptom,
    therapy and therapy kind is defined there, and the phrasings file may only add how people say
    them (PHRASING_KEYS; a word list beside a threshold the clinical file lacks). A phrasing of an
    id the clinical file does not define, or one that would change a fact, is an error. A file
    without `phrasings:` holds both, as one clinic copy may."""
    raw = _read_yaml(path)
    name = raw.pop("phrasings", None)
    if name is None:
        return raw
    phrasings_path = path.parent / str(name)
    phr = _read_yaml(phrasings_path)
    where = str(phrasings_path)

    def entries(value: Any, what: str, file: Any) -> dict[str, dict[str, Any]]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, dict) or v is None for v in value.values()):
            raise KnowledgeBaseError(f"{file}: {what} must map each id to its fields")
        return {str(k): dict(v or {}) for k, v in value.items()}

    def merged(section: str, facts: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        extra = entries(phr.pop(section, None), section, where)
        unknown = sorted(set(extra) - set(facts))
        if unknown:
            raise KnowledgeBaseError(f"{where}: {section} {', '.join(unknown)} not defined in {path}")
        for key, fields in extra.items():
            wrong = sorted(set(fields) - PHRASING_KEYS[section])
            if wrong:
                raise KnowledgeBaseError(f"{where}: {section}.{key}: {', '.join(wrong)} belong in {path}, not with the phrasings")
        return {key: {**facts[key], **extra.get(key, {})} for key in facts}

    raw["symptoms"] = merged("symptoms", entries(raw.get("symptoms"), "symptoms", path))
    raw["therapy_kinds"] = merged("therapy_kinds", entries(raw.get("therapy_kinds"), "therapy_kinds", path))
    therapies = raw.get("therapies") or []
    if not isinstance(therapies, list) or not all(isinstance(t, dict) and t.get("id") for t in therapies):
        raise KnowledgeBaseError(f"{path}: therapies must be a list of entries with an id")
    by_id = merged("therapies", {str(t["id"]): t for t in therapies})
    raw["therapies"] = [by_id[str(t["id"])] for t in therapies]
    thresholds = raw.setdefault("thresholds", {})
    for key, words in entries(phr.pop("thresholds", None), "thresholds", where).items():
        if not isinstance(thresholds.get(key, {}), dict):
            raise KnowledgeBaseError(f"{path}: thresholds.{key} must be a mapping")
        clash = sorted(set(words) & set(thresholds.get(key) or {}))
        if clash:
            raise KnowledgeBaseError(f"{where}: thresholds.{key}.{', '.join(clash)} is set in {path}; a phrasing cannot change it")
        thresholds.setdefault(key, {}).update(words)
    clash = sorted(set(phr) & set(raw))
    if clash:
        raise KnowledgeBaseError(f"{where}: {', '.join(clash)} belong in {path}")
    raw.update(phr)
    return raw


@lru_cache(maxsize=8)
def _load_kb(path: Path) -> KnowledgeBase:
    return parse_knowledge_base(read_knowledge_base(path), path)


@lru_cache(maxsize=8)
def _load_language(path: Path) -> LanguageRules:
    return parse_language_rules(_read_yaml(path), path)


def load_knowledge_base(path: Path | str | None = None) -> KnowledgeBase:
    """The knowledge base at `path`, else $CRS_KNOWLEDGE_BASE, else data/clinical.yml (with data/phrasings.yml)."""
    return _load_kb(Path(path) if path else kb_path())


def load_language_rules(path: Path | str | None = None) -> LanguageRules:
    return _load_language(Path(path) if path else language_path())

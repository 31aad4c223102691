"""Property-based tests (hypothesis) of the symptom extractor, the vitals parser and the triage rules.

Examples are generated, not chosen: any unicode text, emergency phrases from the knowledge base
buried in random text, unrelated sentences added to real messages, vitals on both sides of each
threshold. `make fuzz` runs the coverage-guided counterpart (atheris) for longer.
"""

from __future__ import annotations

import os
import re
import string
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from actions.conversation import MessageFindings, TriageState
from actions.triage import RANK
from bot.clinical.knowledge import load_knowledge_base, load_language_rules
from bot.nlu.extractor import MAX_CHARS, SymptomExtractor
from bot.nlu.rasa_component import findings_to_entities
from bot.nlu.vitals import VitalsParser
from tools.evaluate import OWN_CASES, load_cases
from tools.fuzz import check

KB = load_knowledge_base()
RULES = load_language_rules()
EXTRACTOR = SymptomExtractor(KB, RULES)
LEVELS = set(RANK)


EXPLORE = os.environ.get("HYPOTHESIS_PROFILE") == "explore"  # `make properties`: 20x the examples, at random


def runs(examples: int = 100) -> settings:
    """Derandomized in `make test` (the profile in tests/conftest.py); random under `make properties`."""
    slow = [HealthCheck.too_slow, HealthCheck.data_too_large]
    return settings(deadline=None, max_examples=examples * (20 if EXPLORE else 1), suppress_health_check=slow)


def triage_level(text: str, on_immunotherapy: bool | None = None) -> str:
    """The level the triage action would give this one message (the same path: entities → rules)."""
    findings = MessageFindings.from_entities(findings_to_entities(EXTRACTOR(text)), KB)
    state = TriageState(on_immunotherapy=on_immunotherapy).with_findings(findings)
    return state.assessed(KB)[0].level


# ---------------------------------------------------------------- any input at all
_UNICODE = st.text(st.characters(codec="utf-8"), max_size=400)
_LONG = st.tuples(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40), st.integers(1, MAX_CHARS + 500)).map(
    lambda piece_size: (piece_size[0] * (piece_size[1] // len(piece_size[0]) + 1))[: piece_size[1]]
)


@pytest.mark.slow
@runs()
@given(_UNICODE | _LONG)
@example("\x00" * MAX_CHARS)
@example("🤒" * (MAX_CHARS + 1))
@example("\u202e\u0301" * 500)  # right-to-left override, lone combining marks
@example("39.5" * 5000)
def test_any_text_is_read_without_error(text: str) -> None:
    check(text)  # the contract `make fuzz` checks: mentions in bounds, entities serialise, a valid level
    VitalsParser(KB).parse(text)


_SLOT_VALUES = st.none() | st.booleans() | st.text(max_size=30) | st.lists(st.text(max_size=30), max_size=5)


@runs()
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "triage_level": st.sampled_from(sorted(LEVELS)) | st.none(),
            "symptoms": st.lists(st.sampled_from(sorted(KB.symptoms)) | st.text(max_size=20), max_size=6),
            "denied_symptoms": st.lists(st.sampled_from(sorted(KB.symptoms)) | st.text(max_size=20), max_size=6),
            "on_immunotherapy": st.none() | st.booleans(),
            "therapy": _SLOT_VALUES,
            "therapy_when": _SLOT_VALUES,
            "worsening": _SLOT_VALUES,
            "triage_reasons": st.lists(st.text(max_size=40), max_size=4),
        },
    ),
    st.lists(
        st.fixed_dictionaries(
            {"entity": st.sampled_from(["symptom", "therapy", "worsening", "vital"]) | st.text(max_size=10)},
            optional={
                "value": st.sampled_from(sorted(KB.symptoms)) | st.text(max_size=20) | st.none(),
                "role": st.sampled_from(["present", "absent", "hypothetical"]) | st.text(max_size=10) | st.none(),
                "evidence": st.text(max_size=40) | st.none(),
                "kind": st.text(max_size=10) | st.none(),
            },
        ),
        max_size=8,
    ),
)
def test_triage_rules_take_any_slots_and_entities(slots: dict, entities: list[dict]) -> None:
    before = TriageState.from_slots(slots)
    after, assessment = before.with_findings(MessageFindings.from_entities(entities, KB)).assessed(KB)
    assert assessment.level in LEVELS and after.level in LEVELS
    assert RANK[after.level] >= RANK[before.level if before.level in LEVELS else "none"], "a level never goes down"


# ---------------------------------------------------------------- emergency phrases from the knowledge base
_SUFFIXES = ("", "s", "ed", "d", "ing", "e", "y", "ion", "ions", "a", "sis", "ness", "ly", "on", "ze", "ping", "bing", "red", "ting")


def _alternatives(token: str) -> list[str]:
    optional = token.startswith("[") and token.endswith("]")
    words = token.strip("[]").split("|")
    options = [w for word in words for w in ([word[:-1] + s for s in _SUFFIXES] if word.endswith("*") else [word])]
    return options + ([""] if optional else [])


def _surface_forms(phrase: str) -> Iterator[str]:
    """Concrete texts of one knowledge-base phrase: every alternative of each slot appears at least once."""
    slots = [_alternatives(t) for t in phrase.split() if t != "..."]
    width = max(len(s) for s in slots)
    for i in range(width):
        yield re.sub(r"\s+", " ", " ".join(s[i % len(s)] for s in slots)).strip()


def _emergency_examples() -> tuple[list[tuple[str, str]], list[str]]:
    """(symptom, text) read alone as that emergency symptom; and the phrases no form of which is."""
    found, missed = [], []
    for sid in KB.ids_of_class("emergency"):
        for phrase in KB.symptoms[sid].phrases:
            forms = [f for f in _surface_forms(phrase) if f and sid in EXTRACTOR(f).present]
            found += [(sid, f) for f in forms[:6]]
            if not forms:
                missed.append(f"{sid}: {phrase}")
    return found, missed


EXAMPLES, MISSED = _emergency_examples()


def test_the_emergency_phrases_of_the_knowledge_base_can_be_written() -> None:
    phrases = sum(len(KB.symptoms[s].phrases) for s in KB.ids_of_class("emergency"))
    assert len(MISSED) <= phrases // 10, MISSED  # a phrase no text matches is a knowledge-base bug
    assert {s for s, _ in EXAMPLES} == set(KB.ids_of_class("emergency"))


_TRIGGER_WORDS = {
    w.rstrip("*") for rule in RULES.context_rules if rule.category != "terminate" for w in re.split(r"[\s|]+", rule.literal) if w
} | set(RULES.question_starters)
_NOISE = st.text(st.characters(codec="utf-8", exclude_characters=string.ascii_letters + "?"), max_size=200)
_ANY_NOISE = st.text(st.characters(codec="utf-8"), max_size=200)
# not "ok", "fine", "good": after a symptom they deny it ("breathing ok")
_NEUTRAL_WORDS = ["um", "so", "today", "honestly", "this", "morning", "at", "home", "lol", "the", "kids", "dog", "tea", "tv", "again"]


def _no_trigger(text: str) -> bool:
    words = set(re.findall(r"[a-z']+", text.lower()))
    return not (words & _TRIGGER_WORDS) and "?" not in text


@runs(300)
@given(
    st.sampled_from(EXAMPLES),
    _NOISE | _ANY_NOISE,
    _NOISE | _ANY_NOISE,
    st.sampled_from([". ", ".\n", "! ", "\n\n", " . "]),
    st.sampled_from([". ", ".\n", "! ", "\n\n", " . ", " "]),  # at a word boundary
)
def test_an_emergency_phrase_in_random_text_is_an_emergency(
    case: tuple[str, str], before: str, after: str, glue_before: str, glue_after: str
) -> None:
    assume(_no_trigger(before) and _no_trigger(after))
    text = before + glue_before + case[1] + glue_after + after
    assert triage_level(text) == "emergency", (case, text)


@runs(300)
@given(
    st.sampled_from(EXAMPLES),
    st.lists(st.sampled_from(_NEUTRAL_WORDS), max_size=6),
    st.lists(st.sampled_from(_NEUTRAL_WORDS), max_size=6),
    st.sampled_from([True, False, None]),
)
def test_an_emergency_phrase_inside_a_sentence_is_an_emergency(
    case: tuple[str, str], before: list[str], after: list[str], on_immunotherapy: bool | None
) -> None:
    text = " ".join([*before, case[1], *after])
    assert triage_level(text, on_immunotherapy) == "emergency", (case, text)


# ---------------------------------------------------------------- more text never lowers the level
_MESSAGES = sorted({m for case in load_cases(OWN_CASES) for m in case["messages"] if m.strip()})
_UNRELATED = [
    "The weather is awful here today.",
    "My daughter drove me to the shop this morning.",
    "I watched a film last night.",
    "We had soup for lunch.",
    "Our appointment is on Friday at 10.",
    "The parking at the hospital is expensive.",
    "sorry for the long message",
    "thanks for reading this",
    "ok",
    "lol",
    "🙏🙏",
    "Saludos desde Madrid.",
    "我今天在家。",
]


@runs(400)
@given(
    st.sampled_from(_MESSAGES),
    st.sampled_from(_UNRELATED) | _NOISE,
    st.booleans(),
    st.sampled_from(["\n", " ", ". "]),
)
def test_an_unrelated_sentence_never_lowers_the_level(message: str, unrelated: str, first: bool, glue: str) -> None:
    assume(_no_trigger(unrelated))
    alone = triage_level(message)
    together = triage_level(unrelated + glue + message if first else message + glue + unrelated)
    assert RANK[together] >= RANK[alone], (message, unrelated, alone, together)


# ---------------------------------------------------------------- thresholds, both units
T = KB.thresholds
TEMP = T["temperature"]


def _tenths(low: float, high: float) -> st.SearchStrategy[float]:
    return st.integers(round(low * 10), round(high * 10)).map(lambda n: n / 10)


def _temperatures(unit: str) -> st.SearchStrategy[tuple[str, float]]:
    u = unit.lower()
    edges = [round(limit + step, 1) for limit in (TEMP[f"fever_{u}"], TEMP[f"high_fever_{u}"]) for step in (-0.1, 0, 0.1)]
    return st.tuples(st.just(unit), _tenths(*TEMP[f"plausible_{u}"]) | st.sampled_from(edges))


@runs(400)
@given(
    _temperatures("C") | _temperatures("F"),
    # (not "fever 37.9": the word itself reports a fever, whatever the reading)
    st.sampled_from(["temperature {v} {u}", "temp {v}°{u}", "my temp is {v} {u} now", "thermometer says {v} °{u}", "{v}°{u}"]),
    st.booleans(),
)
def test_temperature_thresholds_in_both_units(unit_value: tuple[str, float], template: str, comma: bool) -> None:
    unit, value = unit_value
    shown = f"{value:.1f}".replace(".", "," if comma else ".")
    high = TEMP[f"high_fever_{unit.lower()}"]
    fever = TEMP[f"fever_{unit.lower()}"]
    present = set(EXTRACTOR(template.format(v=shown, u=unit)).present)
    assert ("high_fever" in present) == (value >= high), (template, shown, unit)
    assert bool(present & {"fever", "high_fever"}) == (value >= fever), (template, shown, unit)


@dataclass(frozen=True)
class Limit:
    template: str
    symptom: str
    group: str  # thresholds group in the knowledge base
    key: str  # the threshold in it
    below: bool  # the symptom is below the threshold (else above it)

    @property
    def value(self) -> float:
        return T[self.group][self.key]

    def crossed(self, v: float) -> bool:
        return v < self.value if self.below else v > self.value


LIMITS = [
    Limit("pulse {v}", "rapid_heartbeat", "pulse", "rapid_above", below=False),
    Limit("heart rate {v} bpm", "rapid_heartbeat", "pulse", "rapid_above", below=False),
    Limit("blood pressure {v}/60", "low_blood_pressure", "systolic", "low_below", below=True),
    Limit("BP {v} over 55 mmHg", "low_blood_pressure", "systolic", "low_below", below=True),
    Limit("SpO2 {v}%", "difficulty_breathing", "spo2", "low_below", below=True),
    Limit("oxygen saturation {v} %", "difficulty_breathing", "spo2", "low_below", below=True),
]


def _readings(limit: Limit) -> st.SearchStrategy[tuple[Limit, int]]:
    low, high = T[limit.group]["plausible"]
    edges = [int(limit.value) - 1, int(limit.value), int(limit.value) + 1]
    return st.tuples(st.just(limit), st.integers(int(low), int(high)) | st.sampled_from(edges))


@runs(300)
@given(st.one_of([_readings(limit) for limit in LIMITS]))
def test_pulse_pressure_and_oxygen_thresholds(reading: tuple[Limit, int]) -> None:
    limit, value = reading
    present = set(EXTRACTOR(limit.template.format(v=value)).present)
    assert (limit.symptom in present) == limit.crossed(value), (limit.template, value)


def test_threshold_tests_follow_the_knowledge_base() -> None:
    """The properties above read every threshold from the knowledge base, none from code."""
    import dataclasses

    stricter = dataclasses.replace(KB, thresholds={**T, "pulse": {**T["pulse"], "rapid_above": 100}})
    assert VitalsParser(stricter).parse("pulse 110")[0].symptom == "rapid_heartbeat"
    assert VitalsParser(KB).parse("pulse 110")[0].symptom is None

"""The whole-message emergency detector: trained on known cases, cached, only ever raising."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot.clinical.knowledge import KnowledgeBaseError
from bot.nlu import detector as detector_module
from bot.nlu.detector import DetectorConfig, EmergencyDetector, features
from bot.nlu.extractor import PRESENT, Question, SymptomExtractor
from bot.nlu.semantic import DEFAULT_SEMANTIC_PATH, SemanticMatcher

# never training data: their score must measure something
HELD_OUT = {"blind-o.jsonl", "blind-r.jsonl", "blind-s.jsonl", "blind-u.jsonl", "blind-v.jsonl", "blind-w.jsonl"}


def probability(extractor: SymptomExtractor, text: str) -> float:
    assert extractor.detector is not None and extractor.semantic is not None
    return extractor.detector.probability(features(extractor.semantic, extractor.clause_texts(text), text))


def with_threshold(extractor: SymptomExtractor, fires_from: float) -> SymptomExtractor:
    """The same extractor with another firing threshold (no retraining: same weights)."""
    assert extractor.detector is not None
    copy = SymptomExtractor.__new__(SymptomExtractor)
    copy.__dict__.update(extractor.__dict__)
    copy.detector = EmergencyDetector(extractor.detector.weights, extractor.detector.bias, fires_from)
    return copy


def test_the_shipped_configuration_trains_on_read_files_only() -> None:
    raw = yaml.safe_load(DEFAULT_SEMANTIC_PATH.read_text())
    config = DetectorConfig.parse(raw["detector"], "semantic.yml")
    assert config.enabled and config.examples
    names = {p.name for p in config.examples}
    assert not names & HELD_OUT, "a held-out file in the training set would stop measuring anything"
    assert all(p.exists() for p in config.examples)


@pytest.mark.parametrize(
    "text",
    [
        "he keeps trying to answer the telly and asked me whose house this is, it's ours",
        "she is talking to her late brother like he's sat on the end of the bed",
        "i just dropped in the kitchen and woke up on the floor with the dog licking me",
    ],
)
def test_a_described_emergency_reads_as_one(extractor: SymptomExtractor, text: str) -> None:
    assert probability(extractor, text) >= extractor.detector.fires_from


@pytest.mark.parametrize(
    "text",
    [
        "we went to the zoo and the kids loved the elephants",
        "what time does the clinic open on saturday?",
        "i'm knackered after the drive, going to have a nap",
        "can CRS make you see things that aren't there?",
    ],
)
def test_everyday_messages_do_not(extractor: SymptomExtractor, text: str) -> None:
    assert probability(extractor, text) < 0.5


def test_it_records_the_closest_present_candidate_with_its_reason(extractor: SymptomExtractor) -> None:
    text = "my husband asked me which hotel we were staying in, we are at home in our own bedroom"
    assert "confusion" not in with_threshold(extractor, 1.0)(text).present
    found = with_threshold(extractor, 0.5)(text)
    mention = next(m for m in found.mentions if m.symptom == "confusion" and m.assertion == PRESENT)
    assert "reads as an emergency" in mention.evidence and "≈ confusion" in mention.evidence
    assert "confusion" not in {q.symptom for q in found.questions}, "what it records is not asked again"


@pytest.mark.parametrize(
    "text",
    [
        "speech is fine, no confusion, temp 37.9",  # a good state is no candidate
        "no chest pain and no trouble breathing, just a sore throat",  # denied
        "can CAR-T cause confusion or seizures weeks later?",  # a question
    ],
)
def test_it_never_records_what_the_message_denies_or_asks(extractor: SymptomExtractor, text: str) -> None:
    low = with_threshold(extractor, 0.5)
    emergencies = {m.symptom for m in low(text).mentions if m.assertion == PRESENT} & low.semantic.emergency
    assert not emergencies, low(text).mentions


def test_it_does_not_run_beside_an_emergency_already_said(extractor: SymptomExtractor) -> None:
    text = "he had a seizure an hour ago and now keeps asking what day it is"
    found = with_threshold(extractor, 0.5)(text)
    assert "seizure" in found.present
    assert not [m for m in found.mentions if "reads as an emergency" in m.evidence]


def write_cases(path: Path) -> None:
    cases = [
        ("he is confused and does not know where he is", "emergency"),
        ("she is seeing people in the room who are not there", "emergency"),
        ("he fainted in the kitchen", "emergency"),
        ("what time is my appointment", "none"),
        ("I have a mild headache", "urgent"),
        ("thanks, all good today", "none"),
    ]
    path.write_text("\n".join(json.dumps({"id": str(i), "messages": [m], "expect": {"triage": t}}) for i, (m, t) in enumerate(cases)))


@pytest.fixture
def tiny_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DetectorConfig:
    """A detector trained on six cases, cached under tmp_path/cache."""
    monkeypatch.setenv(detector_module.CACHE_DIR_ENV, str(tmp_path / "cache"))
    examples = tmp_path / "cases.jsonl"
    write_cases(examples)
    return DetectorConfig(True, 0.9, (examples,), 1.0)


def test_weights_are_cached_by_what_they_depend_on(
    extractor: SymptomExtractor, tiny_config: DetectorConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, examples = tiny_config, tiny_config.examples[0]
    first = EmergencyDetector.load_or_train(config, extractor.semantic, extractor.clause_texts)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1

    def no_training(*_: object) -> None:
        raise AssertionError("retrained although nothing changed")

    monkeypatch.setattr(detector_module, "training_set", no_training)
    again = EmergencyDetector.load_or_train(config, extractor.semantic, extractor.clause_texts)
    assert np.array_equal(first.weights, again.weights)
    examples.write_text(examples.read_text() + "\n" + json.dumps({"id": "x", "messages": ["new"], "expect": {"triage": "none"}}))
    with pytest.raises(AssertionError, match="retrained"):
        EmergencyDetector.load_or_train(config, extractor.semantic, extractor.clause_texts)


def test_bad_configuration_and_examples_are_refused(extractor: SymptomExtractor, tmp_path: Path) -> None:
    with pytest.raises(KnowledgeBaseError, match="fires_from"):
        DetectorConfig.parse({"enabled": True, "fires_from": 0.2, "examples": ["data/cases/own.jsonl"]}, "x")
    assert not DetectorConfig.parse({"enabled": True}, "x").enabled  # nothing to learn from: off
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": ["hi"]}\n')
    with pytest.raises(KnowledgeBaseError, match="expect.triage"):
        detector_module.training_set((broken,), extractor.semantic, extractor.clause_texts)
    one_sided = tmp_path / "one.jsonl"
    one_sided.write_text(json.dumps({"messages": ["hi"], "expect": {"triage": "none"}}))
    with pytest.raises(KnowledgeBaseError, match="emergency and non-emergency"):
        detector_module.training_set((one_sided,), extractor.semantic, extractor.clause_texts)


@pytest.mark.slow
def test_a_disabled_detector_is_not_built(extractor: SymptomExtractor) -> None:
    config = dataclasses.replace(extractor.semantic.config, detector=DetectorConfig(False, 1.01, (), 1.0))
    plain = SymptomExtractor(extractor.kb, extractor.rules, SemanticMatcher(extractor.kb, config, extractor.semantic.encoder))
    assert plain.detector is None
    text = "my husband asked me which hotel we were staying in, we are at home in our own bedroom"
    assert not [m for m in plain(text).mentions if "reads as an emergency" in m.evidence]


def test_it_names_the_likeliest_kind_of_emergency(extractor: SymptomExtractor) -> None:
    text = "she keeps waving at the children on the ceiling and laughing, there's nobody up there"
    kinds = extractor.detector.kind_probabilities(features(extractor.semantic, extractor.clause_texts(text), text))
    assert set(kinds) <= extractor.semantic.emergency and abs(sum(kinds.values()) - 1.0) < 1e-4
    assert max(kinds, key=kinds.get) == "hallucinations"


def test_a_clause_about_the_treatment_is_never_recorded(extractor: SymptomExtractor) -> None:
    found = with_threshold(extractor, 0.5)("Dad had his CAR-T on the 2nd")
    assert not found.present, found.mentions


def test_a_broken_cache_is_trained_again(extractor: SymptomExtractor, tiny_config: DetectorConfig, tmp_path: Path) -> None:
    config = tiny_config
    good = EmergencyDetector.load_or_train(config, extractor.semantic, extractor.clause_texts)
    (cache,) = (tmp_path / "cache").glob("*.npz")
    for damage in (b"", cache.read_bytes()[:100]):  # empty, truncated
        cache.write_bytes(damage)
        again = EmergencyDetector.load_or_train(config, extractor.semantic, extractor.clause_texts)
        assert np.allclose(again.weights, good.weights)
    np.savez(cache, weights=np.zeros(5), bias=0.0, kinds=np.array([]), kind_weights=np.zeros((0, 5)), kind_bias=np.zeros(0))
    assert EmergencyDetector.load_or_train(config, extractor.semantic, extractor.clause_texts).weights.shape == good.weights.shape


@pytest.mark.slow
def test_the_extractor_runs_without_a_detector_it_cannot_build(extractor: SymptomExtractor, tmp_path: Path) -> None:
    """A missing example file (or an unwritable cache) loses the second opinion, not the bot."""
    config = dataclasses.replace(extractor.semantic.config, detector=DetectorConfig(True, 0.85, (tmp_path / "missing.jsonl",), 1.0))
    plain = SymptomExtractor(extractor.kb, extractor.rules, SemanticMatcher(extractor.kb, config, extractor.semantic.encoder))
    assert plain.detector is None
    assert "seizure" in plain("he is having a seizure right now").present


# A review's benign messages: a relative at rest, normal readings, denials beside a neutral clause.
# Before the guards (everyday examples, no readings, kind_from, denials) all fourteen fired;
# "My husband fell asleep watching TV." still reads 0.76 (drowsiness) and is left out: a known
# false alarm (docs/evaluation.md).
@pytest.mark.parametrize(
    "text",
    [
        "He's sitting in his chair.",
        "My husband is sitting quietly in the garden.",
        "Mum is reading the paper in the lounge.",
        "He had a seizure two years ago. He's sitting in the garden now.",
        "She isn't drowsy or confused. She's lying in bed.",
        "She is not confused and not drowsy. She's just resting.",
        "He doesn't have chest pain. He is sitting in the kitchen.",
        "Pulse 78, BP 122/80, temp 36.9. Everything looks normal. He's watching TV.",
        "His oxygen is 96% and heart rate 88. He is sleeping now.",
        "Oxygen 95%. Heart rate 90. Temperature 37.5. He is quiet today.",
        "Sats 99, HR 70. She is lying on the sofa.",
        "Yesterday's scare turned out to be nothing. The ER said his oxygen was 97 and sent us home. He's napping on the couch.",
        "He's shaking all over and his teeth are chattering, he can't get warm",
    ],
)
def test_a_relative_at_rest_is_no_emergency(extractor: SymptomExtractor, text: str) -> None:
    found = extractor(text)
    assert not [m for m in found.mentions if "reads as an emergency" in m.evidence], found.mentions
    assert not set(found.present) & extractor.semantic.emergency, found.mentions


def test_the_language_rules_are_part_of_the_key(extractor: SymptomExtractor, tiny_config: DetectorConfig, tmp_path: Path) -> None:
    rules = tmp_path / "language.yml"
    rules.write_text("a: 1\n")
    EmergencyDetector.load_or_train(tiny_config, extractor.semantic, extractor.clause_texts, depends_on=(rules,))
    rules.write_text("a: 2\n")
    EmergencyDetector.load_or_train(tiny_config, extractor.semantic, extractor.clause_texts, depends_on=(rules,))
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2, "a change of the rules trains new weights"


ORDINARY_DAY = (
    "Morning! Up at seven, walked the dog round the park, then toast and marmalade. I paid the gas bill online and rang the "
    "bank about my card. I had a long bath this afternoon and read a chapter of my book. My neighbour brought round a lemon "
    "cake. The kettle's just boiled for the third time today. I watered the tomatoes and sorted the recycling. Tomorrow I'm "
    "seeing my sister for lunch in town. No problems to report."
)


def with_doubt(extractor: SymptomExtractor, below: float) -> SymptomExtractor:
    """The same extractor with another `doubt_below` (the semantic config is data; no retraining)."""
    assert extractor.semantic is not None
    matcher = SemanticMatcher.__new__(SemanticMatcher)
    matcher.__dict__.update(extractor.semantic.__dict__)
    config = extractor.semantic.config
    detector = dataclasses.replace(config.detector, doubt_below=below, doubt_clauses=8, doubt_long_below=below, doubt_long_clauses=8)
    matcher.config = dataclasses.replace(config, detector=detector)
    copy = SymptomExtractor.__new__(SymptomExtractor)
    copy.__dict__.update(extractor.__dict__)
    copy.semantic = matcher
    return copy


def test_a_long_ordinary_day_with_one_chance_read_is_asked_about(extractor: SymptomExtractor) -> None:
    """A clause of a long message that reads near an emergency by chance becomes a question when
    the whole message does not read as one; with the rule off it counts."""
    p = probability(extractor, ORDINARY_DAY)
    off = with_doubt(extractor, 0.0)(ORDINARY_DAY)
    chance = {m.symptom for m in off.mentions if m.assertion == PRESENT and m.source == "semantic"} & extractor.semantic.emergency
    assert chance, "the example must hold a chance read for this test to mean anything"
    on = with_doubt(extractor, min(0.74, p + 0.01))(ORDINARY_DAY)
    assert not set(on.present) & extractor.semantic.emergency
    assert chance <= {q.symptom for q in on.questions}
    below = with_doubt(extractor, max(0.0, p - 0.01))(ORDINARY_DAY)  # the message reads as more than that: counted
    assert chance <= set(below.present)


def test_a_long_message_with_an_emergency_in_words_is_never_doubted(extractor: SymptomExtractor) -> None:
    text = ORDINARY_DAY.replace("No problems to report.", "Then just now I collapsed on the kitchen floor.")
    assert "fainting" in with_doubt(extractor, 0.74)(text).present


def test_a_longer_message_needs_more_doubt_to_count_a_chance_read(extractor: SymptomExtractor) -> None:
    """`doubt_long_below` applies from `doubt_long_clauses` clauses on: the same long day, scored
    between the two thresholds, is asked about when it is long enough and counted when it is not."""
    p = probability(extractor, ORDINARY_DAY)
    clauses = len(extractor.clause_texts(ORDINARY_DAY))
    assert extractor.semantic is not None

    def doubting(long_clauses: int) -> SymptomExtractor:
        copy = with_doubt(extractor, max(0.0, p - 0.01))  # the short threshold: counted
        assert copy.semantic is not None
        detector = dataclasses.replace(copy.semantic.config.detector, doubt_long_below=min(0.74, p + 0.01), doubt_long_clauses=long_clauses)
        copy.semantic.config = dataclasses.replace(copy.semantic.config, detector=detector)
        return copy

    emergencies = extractor.semantic.emergency
    assert not set(doubting(clauses)(ORDINARY_DAY).present) & emergencies
    assert set(doubting(clauses + 1)(ORDINARY_DAY).present) & emergencies


def test_doubt_thresholds_must_rise_with_length() -> None:
    with pytest.raises(KnowledgeBaseError):
        DetectorConfig.parse({"fires_from": 0.75, "doubt_below": 0.5, "doubt_long_below": 0.3}, "test")
    with pytest.raises(KnowledgeBaseError):
        DetectorConfig.parse({"fires_from": 0.75, "doubt_clauses": 12, "doubt_long_clauses": 8}, "test")


def test_clauses_agree_only_in_a_message_shorter_than_agreeing_below_clauses(extractor: SymptomExtractor) -> None:
    """Two clauses in the question band for one emergency count as agreement in a short message;
    in one of `agreeing_below_clauses` clauses or more they are chance, and stay questions."""
    assert extractor.semantic is not None
    text = "He asked me the same thing twice. He put his keys in the fridge. Otherwise a quiet day."
    doc = extractor.nlp(text)
    ask_from = extractor.semantic.config.ask_from_for("confusion")
    candidates = [
        Question("confusion", "He asked me the same thing twice", ask_from + 0.01, 0, 32),
        Question("confusion", "He put his keys in the fridge", ask_from + 0.02, 34, 63),
    ]
    clauses = len(extractor.clause_texts(text))

    def agreeing(below: int) -> list[str]:
        copy = with_doubt(extractor, 0.0)
        assert copy.semantic is not None
        copy.semantic.config = dataclasses.replace(copy.semantic.config, agreeing_below_clauses=below)
        return [m.symptom for m in copy._corroborated(doc, candidates, set(), clauses)]

    assert agreeing(clauses + 1) == ["confusion"]
    assert agreeing(clauses) == []

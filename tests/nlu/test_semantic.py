"""The semantic layer: meaning beside the rules, with the same assertions, evidence and questions."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import yaml

from bot.clinical.knowledge import KnowledgeBase, KnowledgeBaseError
from bot.nlu.clauses import clause_spans
from bot.nlu.detector import DetectorConfig
from bot.nlu.extractor import ABSENT, PAST, PRESENT, SymptomExtractor
from bot.nlu.semantic import DEFAULT_SEMANTIC_PATH, SemanticMatcher, is_negated_text, parse_semantic_config


@pytest.fixture(scope="module")
def rules_only(kb: KnowledgeBase) -> SymptomExtractor:
    return SymptomExtractor(kb, semantic=False)


# Told as a scene, an event or a feeling: no phrase of the knowledge base matches these.
@pytest.mark.parametrize(
    ("text", "symptom"),
    [
        ("there are children playing in the corner of the room and nobody else can see them", "hallucinations"),
        ("i can hear a choir singing in the walls", "hallucinations"),
        ("he went down like a sack of potatoes in the hallway", "fainting"),
        ("feels like an elephant sitting on me, right in the middle", "chest_pain"),
        ("she keeps asking me what day it is, again and again", "confusion"),
        ("his words come out like he has a mouth full of marbles", "speech_difficulty"),
        ("she conked out halfway through our chat and we can hardly rouse her", "drowsiness"),
        ("her thighs have a lacy purple pattern like a map", "skin_discoloration"),
    ],
)
def test_a_described_emergency_is_found_by_meaning(
    extractor: SymptomExtractor, rules_only: SymptomExtractor, text: str, symptom: str
) -> None:
    assert symptom not in rules_only(text).present, "the rules alone already catch this: pick another example"
    findings = extractor(text)
    assert symptom in findings.present or symptom in {q.symptom for q in findings.questions}, (text, findings.mentions)


def test_the_evidence_names_the_words_and_the_similarity(extractor: SymptomExtractor) -> None:
    findings = extractor("I keep seeing little men in the corner of the room, only I can see them")
    m = next(m for m in findings.mentions if m.source == "semantic")
    assert m.symptom == "hallucinations"
    assert m.evidence.startswith('said "I keep seeing little men in the corner') and "≈ hallucinations 0." in m.evidence


@pytest.mark.parametrize(
    ("text", "symptom", "assertion"),
    [
        ("no, I'm not seeing people who aren't there", "hallucinations", ABSENT),  # denied at the clause's start
        ("mum is chatting away to people who aren't in the room", "hallucinations", PRESENT),  # "aren't" is the scene
        ("he had people in the corner who weren't there last year", "hallucinations", PAST),
    ],
)
def test_semantic_hits_take_the_same_assertions(extractor: SymptomExtractor, text: str, symptom: str, assertion: str) -> None:
    found = {m.symptom: m.assertion for m in extractor(text).mentions}
    assert found.get(symptom) == assertion, (text, extractor(text).mentions)


@pytest.mark.parametrize(
    "text",
    [
        "we had soup for lunch and watched the rugby",
        "my appointment is on Friday at 10",
        "I feel fine today, thanks for checking",
        "the parking at the hospital is a nightmare",
        "what is cytokine release syndrome?",
    ],
)
def test_everyday_sentences_are_not_symptoms(extractor: SymptomExtractor, text: str) -> None:
    findings = extractor(text)
    assert not findings.present and not findings.questions, (text, findings.mentions, findings.questions)


def test_clauses_stop_where_language_stops(extractor: SymptomExtractor) -> None:
    doc = extractor.nlp("no fever but my heart is racing\nok, thanks; see you")
    assert [doc[a:b].text for a, b in clause_spans(doc)] == ["no fever", "my heart is racing", "ok, thanks", "see you"]


def test_descriptions_saying_not_are_recognised() -> None:
    assert is_negated_text("the words won't come out")
    assert is_negated_text("people who aren't there")
    assert not is_negated_text("my heart is racing")


def test_the_config_is_validated(kb: KnowledgeBase) -> None:
    raw = yaml.safe_load(DEFAULT_SEMANTIC_PATH.read_text(encoding="utf-8"))
    parse_semantic_config(raw, kb)
    bad = dict(raw, symptoms={"not_a_symptom": {"threshold": 0.5}})
    with pytest.raises(KnowledgeBaseError, match="not_a_symptom"):
        parse_semantic_config(bad, kb)
    with pytest.raises(KnowledgeBaseError, match="ask_from"):
        parse_semantic_config(dict(raw, defaults={"threshold": 0.5, "ask_from": 0.6, "margin": 0.05}), kb)
    with pytest.raises(KnowledgeBaseError, match="64 hex"):
        parse_semantic_config(dict(raw, model=dict(raw["model"], sha256={"model.safetensors": "abc", "tokenizer.json": "abc"})), kb)
    with pytest.raises(KnowledgeBaseError, match="corroboration.cues.not_a_symptom"):
        parse_semantic_config(dict(raw, corroboration={"cues": {"not_a_symptom": ["nobody is there"]}}), kb)
    with pytest.raises(KnowledgeBaseError, match="unknown class"):
        parse_semantic_config(dict(raw, beside_emergency={"sure_from": 0.6, "read_from": 0.7, "classes": ["lethal"]}), kb)
    with pytest.raises(KnowledgeBaseError, match="groups"):
        parse_semantic_config(dict(raw, corroboration=dict(raw["corroboration"], groups={"neuro": ["not_a_symptom"]})), kb)


def test_cues_match_whole_words_whatever_the_case_and_apostrophes(kb: KnowledgeBase) -> None:
    config = parse_semantic_config(yaml.safe_load(DEFAULT_SEMANTIC_PATH.read_text(encoding="utf-8")), kb)
    assert config.corroborating_cue("hallucinations", "He says a man is there. There's NOTHING there!") == "nothing there"
    assert config.corroborating_cue("hallucinations", "we don’t have a dog") == "we dont have a"
    assert config.corroborating_cue("hallucinations", "he studied all day") is None  # "died" only as a word


@pytest.mark.slow
def test_a_stricter_threshold_from_data_turns_a_hit_into_a_question(extractor: SymptomExtractor, kb: KnowledgeBase) -> None:
    """Thresholds are data: the same clause is a hit, then (threshold raised above its score) a question."""
    text = "there are children playing in the corner of the room and nobody else can see them"
    score = max(float(m.evidence.rsplit(" ", 1)[1]) for m in extractor(text).mentions if m.source == "semantic")
    assert extractor.semantic is not None
    per_symptom = {"hallucinations": {"threshold": round(score + 0.01, 3), "ask_from": round(score - 0.05, 3)}}
    config = dataclasses.replace(extractor.semantic.config, per_symptom=per_symptom, cues={}, agreeing_clauses=0, group_agreeing=0)
    strict = SymptomExtractor(kb, semantic=SemanticMatcher(kb, config, encoder=extractor.semantic.encoder))
    findings = strict(text)
    assert "hallucinations" not in findings.present
    assert {q.symptom for q in findings.questions} == {"hallucinations"}
    # The same candidate, with "nobody else can see" as a corroborating cue in data: found, and the reason says why.
    cued = dataclasses.replace(config, cues={"hallucinations": ("nobody else can see",)}, cue_from=round(score - 0.05, 3))
    findings = SymptomExtractor(kb, semantic=SemanticMatcher(kb, cued, encoder=extractor.semantic.encoder))(text)
    assert "hallucinations" in findings.present and not findings.questions
    assert 'with "nobody else can see"' in next(m.evidence for m in findings.mentions if m.symptom == "hallucinations")


def test_the_data_file_is_where_the_readme_says() -> None:
    assert Path(__file__).resolve().parents[2] / "data" / "semantic.yml" == DEFAULT_SEMANTIC_PATH


@pytest.mark.slow
def test_a_weak_read_beside_a_sure_emergency_adds_no_reason(extractor: SymptomExtractor, kb: KnowledgeBase) -> None:
    """ "spoon in hand" sounds like speech beside a drowsy scene; with the rule off it counts, with
    data/semantic.yml's `beside_emergency` it does not, and the message stays an emergency."""
    text = "my wife keeps nodding off, even while eating, spoon in hand, i have to shout to wake her"
    assert extractor.semantic is not None
    config = extractor.semantic.config
    assert config.beside_read_from > config.beside_sure_from > 0 and "emergency" in config.beside_classes
    off = dataclasses.replace(config, beside_read_from=0.0)
    loose = SymptomExtractor(kb, semantic=SemanticMatcher(kb, off, encoder=extractor.semantic.encoder))(text)
    weak = [m for m in loose.mentions if m.source == "semantic" and m.symptom != "drowsiness" and m.assertion == PRESENT]
    assert weak and all(m.score < config.beside_read_from for m in weak)
    found = extractor(text)
    assert "drowsiness" in found.present
    assert not {m.symptom for m in weak} & set(found.present)


@pytest.mark.slow
def test_unsure_reads_of_one_group_add_up(extractor: SymptomExtractor, kb: KnowledgeBase) -> None:
    """Two clauses that are each only perhaps a neurological emergency (each in the question band,
    here made so by raising the thresholds) count together with `group_agreeing`, and not alone."""
    assert extractor.semantic is not None
    neuro = extractor.semantic.config.groups["neuro"]
    assert {"confusion", "hallucinations"} <= set(neuro) and extractor.semantic.config.group_agreeing == 2
    strict = {sid: {"threshold": 0.99, "ask_from": 0.3} for sid in neuro}
    no_detector = DetectorConfig(False, 1.01, (), 1.0)  # the whole-message detector would add it too
    base = dataclasses.replace(
        extractor.semantic.config, per_symptom=strict, cues={}, agreeing_clauses=0, agreeing_unsure=0, detector=no_detector
    )
    rules_off = dataclasses.replace(base, group_agreeing=0)
    text = "she keeps asking what day it is. she chats to her late mother as if she were in the room"
    alone = SymptomExtractor(kb, semantic=SemanticMatcher(kb, rules_off, encoder=extractor.semantic.encoder))(text)
    both = SymptomExtractor(kb, semantic=SemanticMatcher(kb, base, encoder=extractor.semantic.encoder))(text)
    assert not set(alone.present) & set(neuro)
    (found,) = [m for m in both.mentions if m.symptom in neuro and m.assertion == PRESENT]
    assert "(neuro)" in found.evidence
    # one clause alone is still only a question
    one = SymptomExtractor(kb, semantic=SemanticMatcher(kb, base, encoder=extractor.semantic.encoder))("she keeps asking what day it is")
    assert not set(one.present) & set(neuro)


def test_the_clause_cache_survives_a_batch_that_evicts_its_own_keys(extractor: SymptomExtractor, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full cache once evicted an older key of the batch being embedded, and the lookup failed."""
    from bot.nlu import semantic as semantic_module  # noqa: PLC0415

    matcher = extractor.semantic
    monkeypatch.setattr(semantic_module, "CACHE_SIZE", 3)
    matcher.embed(["one clause", "two clause", "three clause"])
    vectors = matcher.embed(["one clause", "four clause", "five clause", "six clause", "one clause"])
    assert vectors.shape[0] == 5 and np.allclose(vectors[0], vectors[4])
    assert np.allclose(vectors[1], matcher.encoder.encode(["four clause"])[0], atol=1e-5)


class CountingEncoder:
    """Stands in for the model: deterministic float32 rows, and how many texts it was asked to embed."""

    dim = 4

    def __init__(self) -> None:
        self.asked = 0

    def encode(self, texts: list[str]) -> np.ndarray:
        self.asked += len(texts)
        return np.array([[len(t), t.count("a"), t.count("e"), 1.0] for t in texts], dtype=np.float32)


def test_the_fixed_texts_are_embedded_once_and_read_back_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bot.nlu.semantic import VECTORS_ENV, encode_once

    monkeypatch.setenv(VECTORS_ENV, str(tmp_path / "vectors"))
    encoder, texts, sums = CountingEncoder(), ["my lips are blue", "he is confused"], {"model.safetensors": "abc"}
    first = encode_once(encoder, texts, sums)
    again = encode_once(encoder, texts, sums)
    assert encoder.asked == 2 and np.array_equal(first, again) and again.dtype == np.float32, "the second start reads them"
    encode_once(encoder, [*texts, "a new description"], sums)
    encode_once(encoder, texts, {"model.safetensors": "another model"})
    assert encoder.asked == 2 + 3 + 2, "new texts or another model: embedded again"
    (tmp_path / "a-file").write_text("not a directory")
    monkeypatch.setenv(VECTORS_ENV, str(tmp_path / "a-file" / "vectors"))  # cannot be created, even by root
    assert np.array_equal(encode_once(encoder, texts, sums), first), "a cache that cannot be written is only slower"
    assert encoder.asked == 2 + 3 + 2 + 2

"""The knowledge base loads, covers the SPEC vocabulary, and rejects malformed entries clearly."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from bot.clinical.knowledge import (
    DEFAULT_KB_PATH,
    DEFAULT_LANGUAGE_PATH,
    KnowledgeBase,
    KnowledgeBaseError,
    parse_knowledge_base,
    parse_language_rules,
    read_knowledge_base,
)
from bot.nlu.patterns import PatternError, compile_phrase

SPEC_IDS = {
    "emergency": {
        "high_fever",
        "rapid_heartbeat",
        "difficulty_breathing",
        "low_blood_pressure",
        "chest_pain",
        "confusion",
        "speech_difficulty",
        "seizure",
        "hallucinations",
        "drowsiness",
        "fainting",
        "skin_discoloration",
    },
    "serious": {"leg_swelling", "stomach_pain", "bleeding"},
    "mild": {"fever", "chills", "fatigue", "cough", "headache", "loss_of_appetite", "rash", "body_pain", "malaise", "nausea", "dizziness"},
}


def test_every_spec_symptom_has_its_class(kb: KnowledgeBase) -> None:
    for cls, ids in SPEC_IDS.items():
        assert set(kb.ids_of_class(cls)) == ids


def test_article_therapies_present_and_engagers_highest_risk(kb: KnowledgeBase) -> None:
    ids = {t.id for t in kb.therapies}
    assert {"tisagenlecleucel", "blinatumomab", "rituximab", "nivolumab", "alemtuzumab", "oxaliplatin"} <= ids
    assert kb.therapy_kinds["t_cell_engager"].highest_risk and kb.therapy_kinds["car_t"].highest_risk
    assert not kb.therapy_kinds["antibody"].highest_risk


@pytest.fixture()
def raw_kb() -> dict:
    return read_knowledge_base(DEFAULT_KB_PATH)


def test_unknown_class_is_named(raw_kb: dict) -> None:
    bad = copy.deepcopy(raw_kb)
    bad["symptoms"]["cough"]["class"] = "meh"
    with pytest.raises(KnowledgeBaseError, match="cough has unknown class 'meh'"):
        parse_knowledge_base(bad)


def test_missing_phrases_is_named(raw_kb: dict) -> None:
    bad = copy.deepcopy(raw_kb)
    del bad["symptoms"]["rash"]["phrases"]
    with pytest.raises(KnowledgeBaseError, match="rash"):
        parse_knowledge_base(bad)


def test_bad_level_is_named(raw_kb: dict) -> None:
    bad = copy.deepcopy(raw_kb)
    bad["classes"]["serious"]["level"] = "panic"
    with pytest.raises(KnowledgeBaseError, match="panic"):
        parse_knowledge_base(bad)


def test_context_rule_keys_are_whitelisted() -> None:
    raw = yaml.safe_load(DEFAULT_LANGUAGE_PATH.read_text())
    raw["context_rules"].append({"literal": "nah", "category": "negated", "scope": 3})
    with pytest.raises(KnowledgeBaseError, match="unknown keys"):
        parse_language_rules(raw)
    raw["context_rules"][-1] = {"literal": "nah", "category": "maybe"}
    with pytest.raises(KnowledgeBaseError, match="unknown category"):
        parse_language_rules(raw)


def test_phrase_syntax() -> None:
    tok = lambda s: s.lower().split()  # noqa: E731
    [p] = compile_phrase("heart ... racing|pounding", tok)
    assert p[0] == {"NORM": "heart"} and p[-1] == {"NORM": {"IN": ["pounding", "racing"]}}
    assert sum(1 for t in p if t.get("OP") == "?") == 3
    [p] = compile_phrase("[very] tired", tok)
    assert p[0]["OP"] == "?"
    with pytest.raises(PatternError, match="may not start"):
        compile_phrase("... breath", tok)
    with pytest.raises(PatternError, match="bad brackets"):
        compile_phrase("[very tired", tok)


def test_gives_way_to_must_name_a_known_symptom(raw_kb: dict) -> None:
    bad = copy.deepcopy(raw_kb)
    bad["symptoms"]["chills"]["gives_way_to"] = {"epilepsy": ["shaking"]}
    with pytest.raises(KnowledgeBaseError, match="gives way to unknown symptom 'epilepsy'"):
        parse_knowledge_base(bad)


def test_facts_and_phrasings_are_apart_and_merge_into_one_knowledge_base(tmp_path: Path) -> None:
    """data/clinical.yml holds no phrasing, data/phrasings.yml no fact; loaded together they are one base."""
    facts = yaml.safe_load(DEFAULT_KB_PATH.read_text())
    phrasings = yaml.safe_load((DEFAULT_KB_PATH.parent / facts["phrasings"]).read_text())
    assert all(set(s) <= {"class", "label", "snomed", "subsumes"} for s in facts["symptoms"].values())
    assert all(set(t) <= {"id", "name", "kind", "source", "rxnorm"} for t in facts["therapies"])
    assert not any({"class", "label", "snomed"} & set(s) for s in phrasings["symptoms"].values())
    merged = read_knowledge_base(DEFAULT_KB_PATH)
    assert merged["symptoms"]["confusion"]["class"] == "emergency" and merged["symptoms"]["confusion"]["phrases"]
    assert list(merged["symptoms"]) == list(facts["symptoms"]), "the clinical file's order"
    one_file = tmp_path / "one.yml"  # a clinic's single copy with both still loads, to the same base
    one_file.write_text(yaml.safe_dump(merged, sort_keys=False))
    assert repr(parse_knowledge_base(read_knowledge_base(one_file))) == repr(parse_knowledge_base(merged))


@pytest.mark.parametrize(
    ("section", "entry"),
    [("symptoms", {"confusoin": {"phrases": ["muddled"]}}), ("therapies", {"kymria": {"names": ["kymria"]}}),
     ("therapy_kinds", {"car_tt": {"names": ["cart"]}})],
)  # fmt: skip
def test_a_phrasing_of_an_id_the_clinical_file_does_not_define_is_refused(tmp_path: Path, section: str, entry: dict) -> None:
    facts = yaml.safe_load(DEFAULT_KB_PATH.read_text())
    phrasings = yaml.safe_load((DEFAULT_KB_PATH.parent / facts["phrasings"]).read_text())
    phrasings[section].update(entry)
    (tmp_path / "clinical.yml").write_text(yaml.safe_dump(facts, sort_keys=False))
    (tmp_path / facts["phrasings"]).write_text(yaml.safe_dump(phrasings, sort_keys=False))
    with pytest.raises(KnowledgeBaseError, match=next(iter(entry))):
        read_knowledge_base(tmp_path / "clinical.yml")


def write_pair(tmp_path: Path, change: Callable[[dict, dict], None]) -> Path:
    """Copies of data/clinical.yml and its phrasings in tmp_path, `change(facts, phrasings)` applied."""
    facts = yaml.safe_load(DEFAULT_KB_PATH.read_text())
    phrasings = yaml.safe_load((DEFAULT_KB_PATH.parent / facts["phrasings"]).read_text())
    change(facts, phrasings)
    (tmp_path / "clinical.yml").write_text(yaml.safe_dump(facts, sort_keys=False))
    (tmp_path / facts["phrasings"]).write_text(yaml.safe_dump(phrasings, sort_keys=False))
    return tmp_path / "clinical.yml"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f, p: p["symptoms"]["confusion"].update({"class": "mild"}), "class belong in"),
        (lambda f, p: p["symptoms"]["confusion"].update({"label": "a bit muddled"}), "label belong in"),
        (lambda f, p: p["therapies"]["tisagenlecleucel"].update({"kind": "antibody"}), "kind belong in"),
        (lambda f, p: p["therapy_kinds"]["car_t"].update({"highest_risk": False}), "highest_risk belong in"),
        (lambda f, p: p.setdefault("thresholds", {}).update({"spo2": {"low_below": 80}}), "a phrasing cannot change it"),
        (lambda f, p: p.update({"classes": {}}), "classes belong in"),
    ],
    ids=["symptom class", "symptom label", "therapy kind", "kind risk", "threshold", "classes"],
)
def test_a_phrasing_cannot_change_a_clinical_fact(tmp_path: Path, change: Callable[[dict, dict], None], message: str) -> None:
    with pytest.raises(KnowledgeBaseError, match=message):
        read_knowledge_base(write_pair(tmp_path, change))


@pytest.mark.parametrize(
    "change",
    [
        lambda f, p: p.update({"symptoms": [{"confusion": {"phrases": ["muddled"]}}]}),
        lambda f, p: f["symptoms"].update({"confusion": ["emergency"]}),
        lambda f, p: p.update({"therapies": [{"names": ["kymriah"]}]}),
        lambda f, p: f.update({"therapies": {"tisagenlecleucel": {}}}),
        lambda f, p: f["thresholds"].update({"temperature": 38.0}),
    ],
    ids=["phrasings list", "clinical symptom list", "phrasings therapies list", "clinical therapies mapping", "scalar threshold"],
)
def test_a_malformed_file_is_a_knowledge_base_error_not_a_crash(tmp_path: Path, change: Callable[[dict, dict], None]) -> None:
    with pytest.raises(KnowledgeBaseError):
        read_knowledge_base(write_pair(tmp_path, change))

"""Each escalation rule, one by one, and the conversation accumulation rules."""

from __future__ import annotations

import pytest

from actions.conversation import MessageFindings, TriageState, responders_note
from actions.triage import assess, higher
from bot.clinical.knowledge import KnowledgeBase


@pytest.mark.parametrize("status", [True, False, None])
def test_emergency_symptom_is_emergency_whatever_the_status(kb: KnowledgeBase, status: bool | None) -> None:
    for sid in kb.ids_of_class("emergency"):
        assert assess(kb, [sid], status).level == "emergency", sid


@pytest.mark.parametrize("status", [True, False, None])
def test_serious_symptom_is_urgent_whatever_the_status(kb: KnowledgeBase, status: bool | None) -> None:
    for sid in kb.ids_of_class("serious"):
        assert assess(kb, [sid], status).level == "urgent", sid


@pytest.mark.parametrize("status, level", [(True, "urgent"), (None, "urgent"), (False, "monitor")])
def test_mild_symptom_depends_on_immunotherapy(kb: KnowledgeBase, status: bool | None, level: str) -> None:
    for sid in kb.ids_of_class("mild"):
        assert assess(kb, [sid], status).level == level, sid


def test_worsening_mild_symptom_is_urgent_even_off_immunotherapy(kb: KnowledgeBase) -> None:
    result = assess(kb, ["cough"], False, worsening=True)
    assert result.level == "urgent"
    assert "getting worse" in result.reasons[0].rule


def test_nothing_present_is_none(kb: KnowledgeBase) -> None:
    assert assess(kb, [], None).level == "none"


def test_reason_names_evidence_symptom_and_level(kb: KnowledgeBase) -> None:
    result = assess(kb, ["difficulty_breathing"], None, evidence={"difficulty_breathing": "SpO2 88 % < 92 %"})
    assert result.reasons[0].text().startswith("SpO2 88 % < 92 % → difficulty_breathing → emergency")


def test_rules_follow_the_knowledge_base(kb: KnowledgeBase) -> None:
    import dataclasses

    stricter = dataclasses.replace(kb, classes={**kb.classes, "mild": {**kb.classes["mild"], "level_not_on_immunotherapy": "urgent"}})
    assert assess(stricter, ["headache"], False).level == "urgent"


def test_higher() -> None:
    assert higher("monitor", "urgent") == "urgent" and higher("emergency", "none") == "emergency"


def entities(*items: tuple[str, str, str]) -> list[dict]:
    return [{"entity": e, "value": v, "role": r} for e, v, r in items]


def test_level_never_goes_down_and_symptoms_accumulate(kb: KnowledgeBase) -> None:
    state = TriageState()
    state, _ = state.with_findings(MessageFindings.from_entities(entities(("symptom", "headache", "present")), kb)).assessed(kb)
    assert state.level == "urgent"
    off = MessageFindings.from_entities([{"entity": "therapy", "value": "immunotherapy", "role": "absent"}], kb)
    state, _ = state.with_findings(off).assessed(kb)
    assert state.on_immunotherapy is False and state.level == "urgent"
    state, _ = state.with_findings(MessageFindings.from_entities(entities(("symptom", "cough", "present")), kb)).assessed(kb)
    assert state.symptoms == ("headache", "cough")


def test_later_denial_moves_symptom_to_denied(kb: KnowledgeBase) -> None:
    state = TriageState(symptoms=("fever",))
    state = state.with_findings(MessageFindings.from_entities(entities(("symptom", "fever", "absent")), kb))
    assert state.symptoms == () and state.denied == ("fever",)


def test_responders_note_names_the_drug(kb: KnowledgeBase) -> None:
    note = responders_note(TriageState(on_immunotherapy=True, therapy="blinatumomab (Blincyto)", therapy_when="yesterday"))
    assert "blinatumomab" in note and "yesterday" in note
    assert "immunotherapy" in responders_note(TriageState())


def test_a_therapy_once_named_is_not_undone_by_a_later_denial() -> None:
    """Review: "had Kymriah 10 days ago", then words about an appointment must not lower the advice."""
    state = TriageState().with_therapy(True, "tisagenlecleucel", "car_t", "10 days ago").with_therapy(False)
    assert state.on_immunotherapy is True and state.therapy == "tisagenlecleucel"
    assert TriageState().with_therapy(False).on_immunotherapy is False


def test_a_subsumed_symptom_goes_across_messages(kb: KnowledgeBase) -> None:
    """SPEC: a very high fever is only high_fever, also when a fever came in an earlier message."""
    assert "fever" in kb.symptoms["high_fever"].subsumes
    state, _ = TriageState().with_findings(MessageFindings.from_entities(entities(("symptom", "fever", "present")), kb)).assessed(kb)
    assert state.symptoms == ("fever",)
    later = MessageFindings.from_entities(entities(("symptom", "high_fever", "present"), ("symptom", "cough", "present")), kb)
    state, _ = state.with_findings(later).assessed(kb)
    assert state.symptoms == ("high_fever", "cough") and state.level == "emergency"
    assert any("fever" in r for r in state.reasons), "the earlier reason stays on record"


def test_a_subsumed_symptom_comes_back_when_its_subsumer_is_denied(kb: KnowledgeBase) -> None:
    state, _ = TriageState().with_findings(MessageFindings.from_entities(entities(("symptom", "fever", "present")), kb)).assessed(kb)
    state, _ = state.with_findings(MessageFindings.from_entities(entities(("symptom", "high_fever", "present")), kb)).assessed(kb)
    assert state.symptoms == ("high_fever",)
    state, _ = state.with_findings(MessageFindings.from_entities(entities(("symptom", "high_fever", "absent")), kb)).assessed(kb)
    assert state.symptoms == ("fever",) and state.level == "emergency"  # the level never goes down

"""The rasa_sdk actions run on trackers built from snapshots, with a CollectingDispatcher."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Tracker
from rasa_sdk.executor import CollectingDispatcher

from actions.action_answer_yes_no import ActionAnswerYesNo
from actions.action_triage import ActionTriage
from actions.replies import THERAPY_QUESTION

DOMAIN: dict[str, Any] = {}


def tracker(text: str, intent: str, entities: list[dict[str, Any]] | None = None, **slots: Any) -> Tracker:
    message = {"text": text, "intent": {"name": intent, "confidence": 1.0}, "entities": entities or []}
    return Tracker("patient-1", slots, message, [], False, None, {}, "action_listen")


def slot(events: list[dict[str, Any]], name: str) -> Any:
    values = [e["value"] for e in events if e.get("event") == "slot" and e.get("name") == name]
    assert values, f"slot {name} not set"
    return values[-1]


def after(t: Tracker, events: list[dict[str, Any]]) -> dict[str, Any]:
    """The slots as Rasa will hold them once the events are applied."""
    return {**t.slots, **{e["name"]: e["value"] for e in events if e.get("event") == "slot"}}


async def test_emergency_advice_comes_before_any_question() -> None:
    dispatcher = CollectingDispatcher()
    entities = [{"entity": "symptom", "value": "difficulty_breathing", "role": "present", "evidence": "SpO2 88 % < 92 %"}]
    events = await ActionTriage().run(dispatcher, tracker("SpO2 88%", "report_symptoms", entities), DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_emergency"
    assert dispatcher.messages[-1]["response"] == "utter_ask_therapy"
    assert slot(events, "triage_level") == "emergency"
    assert slot(events, "symptoms") == ["difficulty_breathing"]
    assert any(r.startswith("SpO2 88 % < 92 % → difficulty_breathing → emergency") for r in slot(events, "triage_reasons"))


async def test_urgent_asks_the_emergency_screen_with_buttons_slot() -> None:
    dispatcher = CollectingDispatcher()
    entities = [{"entity": "symptom", "value": "headache", "role": "present", "evidence": 'said "headache"'}]
    events = await ActionTriage().run(dispatcher, tracker("headache", "report_symptoms", entities), DOMAIN)
    assert [m["response"] for m in dispatcher.messages] == ["utter_urgent", "utter_ask_emergency_check"]
    assert slot(events, "pending_question") == "emergency_check"
    assert "difficulty_breathing" in slot(events, "asked")


async def test_yes_to_the_screen_is_an_emergency() -> None:
    dispatcher = CollectingDispatcher()
    t = tracker(
        "yes",
        "affirm",
        pending_question="emergency_check",
        asked=["emergency_check", "confusion"],
        triage_level="urgent",
        symptoms=["headache"],
    )
    events = await ActionAnswerYesNo().run(dispatcher, t, DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_emergency_check_yes"
    assert slot(events, "triage_level") == "emergency"
    assert "confusion" in slot(events, "triage_reasons")[-1]


async def test_yes_to_therapy_keeps_waiting_for_the_details() -> None:
    dispatcher = CollectingDispatcher()
    t = tracker("yes", "affirm", pending_question="therapy", asked=["therapy"], triage_level="urgent", symptoms=["fatigue"])
    events = await ActionAnswerYesNo().run(dispatcher, t, DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_ask_therapy_details"
    assert slot(events, "on_immunotherapy") is True
    assert slot(events, "pending_question") == "therapy"
    dispatcher = CollectingDispatcher()
    t = tracker(
        "the pink bag from the trial",
        "inform_therapy",
        pending_question="therapy",
        asked=["therapy"],
        triage_level="urgent",
        symptoms=["fatigue"],
        on_immunotherapy=True,
    )
    events = await ActionTriage().run(dispatcher, t, DOMAIN)
    assert slot(events, "therapy") == "the pink bag from the trial"


async def test_no_to_therapy_keeps_the_level() -> None:
    dispatcher = CollectingDispatcher()
    t = tracker("no", "deny", pending_question="therapy", asked=["therapy"], triage_level="urgent", symptoms=["headache"])
    events = await ActionAnswerYesNo().run(dispatcher, t, DOMAIN)
    assert after(t, events)["on_immunotherapy"] is False
    assert after(t, events)["triage_level"] == "urgent"


async def test_hypothetical_question_gets_advice_not_a_level() -> None:
    dispatcher = CollectingDispatcher()
    entities = [{"entity": "symptom", "value": "fainting", "role": "hypothetical"}]
    t = tracker("what if I faint?", "ask_symptom_advice", entities, triage_level="none", symptoms=[])
    events = await ActionTriage().run(dispatcher, t, DOMAIN)
    assert "911" in dispatcher.messages[0]["advice"]
    assert after(t, events)["triage_level"] == "none" and after(t, events)["symptoms"] == []


async def test_only_changed_slots_are_set() -> None:
    dispatcher = CollectingDispatcher()
    entities = [{"entity": "symptom", "value": "cough", "role": "present", "evidence": 'said "cough"'}]
    t = tracker("cough", "report_symptoms", entities, triage_level="urgent", symptoms=["headache"], asked=["emergency_check", "therapy"])
    events = await ActionTriage().run(dispatcher, t, DOMAIN)
    names = {e["name"] for e in events if e.get("event") == "slot"}
    assert "triage_level" not in names and "on_immunotherapy" not in names
    assert after(t, events)["symptoms"] == ["headache", "cough"]


async def test_symptoms_of_a_message_answered_by_the_fail_safe_still_count() -> None:
    held = [{"entity": "symptom", "value": "difficulty_breathing", "role": "present", "evidence": 'said "can\'t breathe"'}]
    headache = [{"entity": "symptom", "value": "headache", "role": "present", "evidence": 'said "headache"'}]
    dispatcher = CollectingDispatcher()
    t = tracker("and a headache", "report_symptoms", headache, untriaged=held)
    events = await ActionTriage().run(dispatcher, t, DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_emergency"
    assert slot(events, "triage_level") == "emergency"
    assert set(slot(events, "symptoms")) == {"difficulty_breathing", "headache"}
    assert slot(events, "untriaged") == [], "counted once, then cleared"
    plain = await ActionTriage().run(CollectingDispatcher(), tracker("headache", "report_symptoms", headache), DOMAIN)
    assert not [e for e in plain if e.get("name") == "untriaged"], "nothing to clear"


POSSIBLE = [{"entity": "possible_symptom", "value": "hallucinations", "text": "kids playing by the wall", "score": 0.46}]


async def test_a_suspected_emergency_is_asked_about_not_guessed() -> None:
    dispatcher = CollectingDispatcher()
    t = tracker("kids playing by the wall", "report_symptoms", POSSIBLE)
    events = await ActionTriage().run(dispatcher, t, DOMAIN)
    assert [m["response"] for m in dispatcher.messages] == ["utter_ask_possible_symptom"]
    assert slot(events, "pending_question") == "possible_symptom"
    assert slot(events, "possible_symptom")["symptom"] == "hallucinations"
    assert "≈ hallucinations 0.46" in slot(events, "possible_symptom")["evidence"]


async def test_yes_to_a_suspected_emergency_records_it_with_its_evidence() -> None:
    dispatcher = CollectingDispatcher()
    t = tracker("kids playing by the wall", "report_symptoms", POSSIBLE)
    slots = after(t, await ActionTriage().run(CollectingDispatcher(), t, DOMAIN))
    events = await ActionAnswerYesNo().run(dispatcher, tracker("yes", "affirm", **slots), DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_emergency"
    assert slot(events, "triage_level") == "emergency"
    assert slot(events, "symptoms") == ["hallucinations"]
    assert 'answered yes to "Are you' in slot(events, "symptom_evidence")["hallucinations"]


async def test_no_to_a_suspected_emergency_denies_it_and_still_names_911() -> None:
    dispatcher = CollectingDispatcher()
    t = tracker("kids playing by the wall", "report_symptoms", POSSIBLE)
    slots = after(t, await ActionTriage().run(CollectingDispatcher(), t, DOMAIN))
    events = await ActionAnswerYesNo().run(dispatcher, tracker("no", "deny", **slots), DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_possible_symptom_no"
    assert slot(events, "denied_symptoms") == ["hallucinations"]
    assert (after(t, events).get("triage_level") or "none") == "none"


async def test_nothing_recognised_still_gets_a_reply() -> None:
    dispatcher = CollectingDispatcher()
    await ActionTriage().run(dispatcher, tracker("hmm", "report_symptoms"), DOMAIN)
    assert [m["response"] for m in dispatcher.messages] == ["utter_unknown_symptom"]


async def test_an_escalated_neuro_check_in_the_metadata_is_an_emergency_naming_the_item() -> None:
    """The relay reports a caregiver's neuro check as `/report_symptoms` with the findings in its metadata."""
    dispatcher = CollectingDispatcher()
    found = {
        "check": "abc",
        "findings": [
            {"symptom": "speech_difficulty", "item": "object_2", "evidence": "caregiver neuro check: naming the second object not right"}
        ],
    }
    t = tracker("/report_symptoms", "report_symptoms")
    t.latest_message["metadata"] = {"telegram": {"neuro_check": found}}
    events = await ActionTriage().run(dispatcher, t, DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_emergency"
    assert slot(events, "triage_level") == "emergency" and slot(events, "symptoms") == ["speech_difficulty"]
    assert any("naming the second object" in r and "speech_difficulty → emergency" in r for r in slot(events, "triage_reasons"))


async def test_a_malformed_or_unknown_structured_report_adds_nothing() -> None:
    for metadata in ({"telegram": {"neuro_check": "yes"}}, {"telegram": {"neuro_check": {"findings": [{"symptom": "sneezing"}, 3]}}}, None):
        dispatcher = CollectingDispatcher()
        t = tracker("/report_symptoms", "report_symptoms")
        t.latest_message["metadata"] = metadata
        events = await ActionTriage().run(dispatcher, t, DOMAIN)
        assert not [e for e in events if e.get("name") == "triage_level" and e.get("value") != "none"]
        assert dispatcher.messages  # never silent


def _answering_checkin(text: str, intent: str, events: list[dict[str, Any]] | None = None, **slots: Any) -> Tracker:
    """A reply carrying the relay's `checkin` metadata: a check-in sent at t=1000 asked the emergency screen."""
    t = tracker(text, intent, **slots)
    signs = ["difficulty_breathing", "chest_pain", "confusion", "seizure"]
    t.latest_message["metadata"] = {
        "telegram": {"checkin": {"question": "emergency_check", "signs": signs, "key": "K@1", "sent_at": 1000.0}}
    }
    t.events = events or []
    return t


async def test_a_typed_yes_to_a_check_in_is_an_emergency_naming_its_question() -> None:
    dispatcher = CollectingDispatcher()
    events = await ActionAnswerYesNo().run(dispatcher, _answering_checkin("yeah", "affirm"), DOMAIN)
    assert [m["response"] for m in dispatcher.messages] == ["utter_emergency_check_yes"]
    assert slot(events, "triage_level") == "emergency" and "checkin:K@1" in slot(events, "asked")
    assert any(
        r.startswith("answered yes to the check-in's emergency question (") and "chest pain" in r for r in slot(events, "triage_reasons")
    )


async def test_an_ok_to_a_check_in_asks_its_question_again_instead_of_calling_it_an_emergency() -> None:
    for text in ("ok", "sure", "yes please"):
        dispatcher = CollectingDispatcher()
        events = await ActionAnswerYesNo().run(dispatcher, _answering_checkin(text, "affirm"), DOMAIN)
        assert [m["response"] for m in dispatcher.messages] == ["utter_checkin_screen_ask"], text
        assert "chest pain" in dispatcher.messages[0]["signs"] and not [e for e in events if e.get("name") == "triage_level"]
    dispatcher = CollectingDispatcher()
    events = await ActionAnswerYesNo().run(dispatcher, _answering_checkin("/affirm", "affirm"), DOMAIN)  # its Yes button
    assert slot(events, "triage_level") == "emergency"


async def test_a_no_to_a_check_in_thanks_asks_for_the_temperature_and_beats_an_older_question() -> None:
    older = [{"event": "slot", "name": "pending_question", "value": THERAPY_QUESTION, "timestamp": 500.0}]
    dispatcher = CollectingDispatcher()
    t = _answering_checkin("nope", "deny", events=older, pending_question=THERAPY_QUESTION)
    events = await ActionAnswerYesNo().run(dispatcher, t, DOMAIN)
    assert dispatcher.messages[0]["response"] == "utter_checkin_screen_no"
    assert not [e for e in events if e.get("name") == "triage_level"] and "checkin:K@1" in slot(events, "asked")


async def test_a_question_asked_after_the_check_in_or_a_check_in_answered_already_is_not_the_one_answered() -> None:
    newer = [{"event": "slot", "name": "pending_question", "value": THERAPY_QUESTION, "timestamp": 1500.0}]
    dispatcher = CollectingDispatcher()
    events = await ActionAnswerYesNo().run(
        dispatcher, _answering_checkin("yes", "affirm", events=newer, pending_question=THERAPY_QUESTION), DOMAIN
    )
    assert dispatcher.messages[0]["response"] == "utter_ask_therapy_details" and not [e for e in events if e.get("value") == "emergency"]
    dispatcher = CollectingDispatcher()
    await ActionAnswerYesNo().run(dispatcher, _answering_checkin("yes", "affirm", asked=["checkin:K@1"]), DOMAIN)
    assert [m["response"] for m in dispatcher.messages] == ["utter_affirm_no_question"]


async def test_a_bare_yes_answering_nothing_stays_a_plain_acknowledgement() -> None:
    dispatcher = CollectingDispatcher()
    await ActionAnswerYesNo().run(dispatcher, tracker("yes", "affirm"), DOMAIN)
    assert [m["response"] for m in dispatcher.messages] == ["utter_affirm_no_question"]

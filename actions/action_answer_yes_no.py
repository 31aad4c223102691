"""`action_answer_yes_no`: a bare "yes"/"no" answers the question the bot asked last."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.conversation import MessageFindings, TriageState, labels, responders_note
from actions.replies import EMERGENCY_CHECK, POSSIBLE_SYMPTOM, THERAPY_QUESTION, follow_up_events, send_level_advice, slot_events
from bot.checkins.schedule import load_checkin_config
from bot.clinical.knowledge import KnowledgeBase, load_knowledge_base


@dataclass(frozen=True)
class CheckinQuestion:
    """The emergency screen of a check-in the relay sent (metadata `checkin`, bot/checkins/service.py)."""

    signs: list[str]
    key: str  # the check-in; recorded in `asked` once answered, so a later yes answers something else
    sent_at: float

    @property
    def marker(self) -> str:
        return f"checkin:{self.key}"


def checkin_question(metadata: Any, kb: KnowledgeBase, events: list[dict[str, Any]], asked: list[str]) -> CheckinQuestion | None:
    """The check-in question a yes or no answers, or None: no check-in, answered already, or the
    assistant has asked a question of its own since (that one is being answered)."""
    checkin = ((metadata or {}).get("telegram") or {}).get("checkin") if isinstance(metadata, dict) else None
    if not isinstance(checkin, dict) or checkin.get("question") != EMERGENCY_CHECK:
        return None
    signs = checkin.get("signs")
    try:
        sent_at = float(checkin.get("sent_at") or 0.0)
    except (TypeError, ValueError):
        sent_at = 0.0
    question = CheckinQuestion(
        [s for s in signs if isinstance(s, str) and s in kb.symptoms] if isinstance(signs, list) else [],
        str(checkin.get("key") or ""),
        sent_at,
    )
    if question.key and question.marker in asked:
        return None
    newer = [e for e in events if e.get("event") == "slot" and e.get("name") == "pending_question" and e.get("value")]
    if newer and float(newer[-1].get("timestamp") or 0.0) > sent_at:
        return None
    return question


class ActionAnswerYesNo(Action):
    """Yes to the emergency screen → 911; yes/no to the therapy question → status slot."""

    def name(self) -> str:
        return "action_answer_yes_no"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        kb = load_knowledge_base()
        intent = ((tracker.latest_message or {}).get("intent") or {}).get("name")
        yes = intent == "affirm"
        pending = tracker.get_slot("pending_question")
        asked = list(tracker.get_slot("asked") or [])
        state = before = TriageState.from_slots(tracker.current_slot_values())
        events: list[dict[str, Any]] = [SlotSet("pending_question", None)]
        message = tracker.latest_message or {}
        checkin = checkin_question(message.get("metadata"), kb, list(tracker.events), asked)
        if checkin is not None:  # a check-in asked it last: that is the question answered
            if yes and not load_checkin_config().is_clear_yes(str(message.get("text") or "")):
                # "ok", "sure": maybe "I will take my temperature"; ask again, with buttons and the 911 line
                dispatcher.utter_message(response="utter_checkin_screen_ask", signs=labels(kb, checkin.signs).replace(" and ", " or "))
                return events
            pending, asked = EMERGENCY_CHECK, [*asked, checkin.marker]
            events.append(SlotSet("asked", asked))

        if pending == EMERGENCY_CHECK:
            screened = checkin.signs if checkin is not None else [s for s in asked if s in kb.symptoms]
            if yes:
                what = "the check-in's emergency question" if checkin is not None else "the emergency screen"
                reason = f"answered yes to {what} ({labels(kb, screened)}) → emergency"
                state = replace(state, level="emergency", reasons=(*state.reasons, reason))
                dispatcher.utter_message(response="utter_emergency_check_yes", responders=responders_note(state))
                return events + slot_events(state, before)
            dispatcher.utter_message(response="utter_checkin_screen_no" if checkin is not None else "utter_emergency_check_no")
        elif pending == POSSIBLE_SYMPTOM:
            possible = tracker.get_slot("possible_symptom") or {}
            symptom = possible.get("symptom") if isinstance(possible, dict) else None
            events.append(SlotSet("possible_symptom", None))
            if symptom in kb.symptoms:
                question = kb.symptoms[symptom].ask
                evidence = f'{possible.get("evidence") or ""}; answered {"yes" if yes else "no"} to "{question}"'.lstrip("; ")
                if yes:
                    state, result = state.with_findings(MessageFindings(present={symptom: evidence})).assessed(kb)
                    send_level_advice(dispatcher, kb, state, result, [symptom])
                    return events + slot_events(state, before)
                state = state.with_findings(MessageFindings(absent={symptom: evidence}))
                state = replace(state, reasons=(*state.reasons, evidence))
            dispatcher.utter_message(response="utter_possible_symptom_no")
            if state.level != "none":
                state, result = state.assessed(kb)
                send_level_advice(dispatcher, kb, state, result, [])
        elif pending == THERAPY_QUESTION:
            state = state.with_therapy(yes)
            state, result = state.assessed(kb)
            if yes:
                dispatcher.utter_message(response="utter_ask_therapy_details")
                # Still waiting for the drug and date: an answer we cannot parse is kept as text.
                return slot_events(state, before) + [SlotSet("pending_question", THERAPY_QUESTION)]
            dispatcher.utter_message(response="utter_no_therapy_noted")
            if state.level != "none":
                send_level_advice(dispatcher, kb, state, result, [])
        else:
            dispatcher.utter_message(response="utter_affirm_no_question")
            return events

        marked = [e for e in events if e.get("name") == "asked"]  # the check-in answered, if it was one
        return marked + follow_up_events(dispatcher, kb, state, before, asked)

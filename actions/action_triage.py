"""`action_triage`: apply the escalation rules to what the patient just said."""

from __future__ import annotations

from typing import Any

from rasa_sdk import Action, Tracker
from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.conversation import MessageFindings, TriageState
from actions.enrolment_context import with_enrolment
from actions.replies import THERAPY_QUESTION, ask_possible_symptom, follow_up_events, hypothetical_advice, send_level_advice, slot_events
from bot.checkins.neuro import reported_entities
from bot.clinical.knowledge import load_knowledge_base


class ActionTriage(Action):
    """Update symptoms/therapy slots from the message's entities, decide the level, reply."""

    def name(self) -> str:
        return "action_triage"

    async def run(self, dispatcher: CollectingDispatcher, tracker: Tracker, domain: dict[str, Any]) -> list[dict[str, Any]]:
        kb = load_knowledge_base()
        message = tracker.latest_message or {}
        # messages answered by the Rasa server's fail-safe while this server was down count too
        untriaged = list(tracker.get_slot("untriaged") or [])
        entities = untriaged + list(message.get("entities") or []) + reported_entities(message.get("metadata"))
        findings = MessageFindings.from_entities(entities, kb)
        before = TriageState.from_slots(tracker.current_slot_values())
        asked = list(tracker.get_slot("asked") or [])
        pending = tracker.get_slot("pending_question")
        state = with_enrolment(before.with_findings(findings), tracker.events)
        if pending == THERAPY_QUESTION and findings.on_immunotherapy is None and not findings.mentions_symptoms:
            # An answer we cannot parse ("the pink one, Tuesday") is kept for the clinic.
            intent = (message.get("intent") or {}).get("name")
            if intent == "inform_therapy":
                state = state.with_therapy(True, therapy=str(message.get("text") or "")[:120])
        state, result = state.assessed(kb)

        new = [s for s in findings.present if s not in before.symptoms]
        if findings.mentions_symptoms or state.level != before.level:
            send_level_advice(dispatcher, kb, state, result, new)
        elif findings.hypothetical:
            advice = hypothetical_advice(kb, findings.hypothetical, state.on_immunotherapy)
            dispatcher.utter_message(response="utter_hypothetical", advice=advice)
        elif findings.on_immunotherapy is not None or state.therapy != before.therapy:
            if state.on_immunotherapy:
                kind = kb.therapy_kinds.get(state.therapy_kind or "")
                risk = "This kind of therapy carries the highest risk of CRS, so" if kind and kind.highest_risk else "So"
                dispatcher.utter_message(
                    response="utter_therapy_noted",
                    # on immunotherapy with no name known (an enrolment or a reply we could not parse): say so plainly
                    therapy=(state.therapy or "immunotherapy") + (f", {state.therapy_when}" if state.therapy_when else ""),
                    risk=f"{risk} tell me at once about any new symptom, even a mild one; in an emergency call 911.",
                )
            else:
                dispatcher.utter_message(response="utter_no_therapy_noted")
            if state.level != "none":
                send_level_advice(dispatcher, kb, state, result, [])
            elif not state.symptoms:
                dispatcher.utter_message(response="utter_ask_symptoms")
        elif state.level != "none" and (message.get("intent") or {}).get("name") == "ask_what_to_do" and not findings.possible:
            send_level_advice(dispatcher, kb, state, result, [])  # "what should I do?" after a triage

        cleared = [SlotSet("untriaged", [])] if untriaged else []
        if findings.possible and state.level != "emergency":
            question = ask_possible_symptom(dispatcher, kb, state, findings.possible)
            if question:
                return slot_events(state, before) + question + cleared
        if not dispatcher.messages:  # never silent: nothing recognised, or the suspected sign was already settled
            dispatcher.utter_message(response="utter_unknown_symptom")
        events = follow_up_events(dispatcher, kb, state, before, asked)
        return events + cleared

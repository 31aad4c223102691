"""Which responses to send after a triage decision (texts live in domain.yml `responses`)."""

from __future__ import annotations

from typing import Any

from rasa_sdk.events import SlotSet
from rasa_sdk.executor import CollectingDispatcher

from actions.conversation import TriageState, labels, responders_note
from actions.triage import RANK, Assessment, emergency_signs, symptom_level
from bot.clinical.knowledge import KnowledgeBase

THERAPY_QUESTION = "therapy"
EMERGENCY_CHECK = "emergency_check"
POSSIBLE_SYMPTOM = "possible_symptom"


def _sentence_start(text: str) -> str:
    return text[:1].upper() + text[1:]


def send_level_advice(dispatcher: CollectingDispatcher, kb: KnowledgeBase, state: TriageState, result: Assessment, new: list[str]) -> None:
    """The advice for the current level; emergency always first and always with 911."""
    if state.level == "emergency":
        now = [r.symptom for r in result.reasons_at("emergency") if r.symptom in new]
        if now or not any(r.symptom for r in result.reasons_at("emergency")):
            signs = _sentence_start(labels(kb, now) or "what you describe")
            dispatcher.utter_message(response="utter_emergency", signs=signs, responders=responders_note(state))
        else:
            earlier = [r.symptom for r in result.reasons_at("emergency") if r.symptom]
            dispatcher.utter_message(response="utter_emergency_reminder", signs=labels(kb, earlier))
        return
    if state.level == "urgent":
        urgent = [r for r in result.reasons if r.level == "urgent" and r.symptom]
        why = _urgent_why(state, result)
        signs = labels(kb, [r.symptom for r in urgent if r.symptom]) or "how you feel"
        dispatcher.utter_message(response="utter_urgent", signs=signs, why=why)
        return
    if state.level == "monitor":
        signs = _sentence_start(labels(kb, state.symptoms) or "this")
        dispatcher.utter_message(response="utter_monitor", signs=signs)
        return
    if state.denied:
        dispatcher.utter_message(response="utter_no_symptoms", signs=labels(kb, state.denied).replace(" and ", " or "))
    else:
        dispatcher.utter_message(response="utter_ask_symptoms")


def _urgent_why(state: TriageState, result: Assessment) -> str:
    rules = {r.rule for r in result.reasons if r.level == "urgent"}
    if any("getting worse" in r or "feels worse" in r for r in rules):
        return "Symptoms that get worse or do not improve need a doctor's review."
    if any(r.startswith("serious") for r in rules):
        return "This can be a sign of serious cytokine release syndrome (CRS)."
    if state.on_immunotherapy:
        return "After immunotherapy even mild symptoms can be the start of CRS and can get worse within days."
    return "Even mild symptoms can be the start of cytokine release syndrome (CRS) if you have had immunotherapy."


def unscreened_emergency_signs(kb: KnowledgeBase, state: TriageState, asked: list[str]) -> list[str]:
    covered = set(state.symptoms) | set(state.denied) | set(asked)
    return [s for s in emergency_signs(kb) if s not in covered]


def ask_follow_up(
    dispatcher: CollectingDispatcher, kb: KnowledgeBase, state: TriageState, asked: list[str]
) -> tuple[str | None, list[str]]:
    """One follow-up question (screen for emergency signs, else immunotherapy status).

    Returns (pending question, ids screened) to store in slots. Never asked before the
    emergency advice: callers send the level advice first.
    """
    if state.level == "urgent" and EMERGENCY_CHECK not in asked:
        signs = unscreened_emergency_signs(kb, state, asked)
        if signs:
            dispatcher.utter_message(response="utter_ask_emergency_check", signs=labels(kb, signs).replace(" and ", " or "))
            return EMERGENCY_CHECK, [EMERGENCY_CHECK, *signs]
    if state.on_immunotherapy is None and THERAPY_QUESTION not in asked and (state.symptoms or state.level != "none"):
        dispatcher.utter_message(response="utter_ask_therapy")
        return THERAPY_QUESTION, [THERAPY_QUESTION]
    return None, []


def hypothetical_advice(kb: KnowledgeBase, symptoms: list[str], on_immunotherapy: bool | None) -> str:
    """ "If X happens: ..." for questions like "what should I do if I faint?"."""
    lines = []
    levels = {sid: symptom_level(kb, sid, on_immunotherapy)[0] for sid in symptoms}
    for sid, level in sorted(levels.items(), key=lambda item: -RANK[item[1]]):
        label = kb.symptoms[sid].label
        if level == "emergency":
            lines.append(f"If you get {label}: that is an emergency sign, call 911 (or your local emergency number) at once.")
        elif level == "urgent":
            lines.append(f"If you get {label}: contact your doctor or care team straight away, day or night.")
        else:
            lines.append(
                f"If you get {label}: it is usually mild; keep watching, and contact your doctor if it does not improve or gets worse."
            )
    lines.append(
        "Emergency signs (call 911): trouble breathing, racing heart, chest pain, high fever, confusion, trouble speaking, "
        "seizure, hallucinations, being very drowsy, fainting, or blue lips or skin."
    )
    return " ".join(lines)


def slot_events(state: TriageState, before: TriageState) -> list[dict[str, Any]]:
    """SlotSet events for the slots this turn changed only: every event is validated, stored
    and replayed by Rasa on each later message, so unchanged ones cost time for nothing."""
    old = before.to_slots()
    return [SlotSet(k, v) for k, v in state.to_slots().items() if old.get(k) != v]


def ask_possible_symptom(
    dispatcher: CollectingDispatcher, kb: KnowledgeBase, state: TriageState, possible: list[tuple[str, str, float]]
) -> list[dict[str, Any]]:
    """Ask "Are you saying ...?" about the best emergency the semantic layer suspects but is
    not sure of (none asked if already known). The reply names 911 whatever the answer."""
    for symptom, words, similarity in possible:
        if symptom in state.symptoms or symptom in state.denied or not kb.symptoms[symptom].ask:
            continue
        label = kb.symptoms[symptom].label
        evidence = f'said "{words}" ≈ {label} {similarity:.2f}'
        dispatcher.utter_message(response="utter_ask_possible_symptom", question=kb.symptoms[symptom].ask, said=words[:160])
        return [SlotSet("pending_question", POSSIBLE_SYMPTOM), SlotSet("possible_symptom", {"symptom": symptom, "evidence": evidence})]
    return []


def follow_up_events(
    dispatcher: CollectingDispatcher, kb: KnowledgeBase, state: TriageState, before: TriageState, asked: list[str]
) -> list[dict[str, Any]]:
    """Ask the next follow-up question (if any) and return the slot events of the turn."""
    question, screened = ask_follow_up(dispatcher, kb, state, asked)
    events = slot_events(state, before) + [SlotSet("pending_question", question)]
    if screened:
        events.append(SlotSet("asked", asked + screened))
    return events

"""Never silent: when the action server cannot answer, the Rasa server still replies safely.

Stock Rasa logs a failed custom action and answers nothing — a patient who just wrote "I can't
breathe" would get silence. This wraps `RemoteAction.run`: on a connection or server error it
sends `utter_failsafe_emergency` (911 now) when the NLU already found an emergency symptom in
the message, else `utter_failsafe` (the emergency signs, 911, contact the care team). The user
message stays in the tracker and its findings in the `untriaged` slot, so nothing is lost: once
the action server is back, the next triage counts them too. A deliberate `ActionExecutionRejection` is left to Rasa.

Replaces: `RemoteAction.run`, wrapped (tests/integration/test_faults.py stops the action server mid-conversation).
"""

from __future__ import annotations

import logging
from typing import Any

from rasa.core.actions.action import ActionExecutionRejection, RemoteAction
from rasa.shared.core.events import BotUttered, Event, SlotSet
from rasa.shared.exceptions import RasaException

from bot.clinical.knowledge import load_knowledge_base

log = logging.getLogger(__name__)

EMERGENCY_RESPONSE = "utter_failsafe_emergency"
GENERAL_RESPONSE = "utter_failsafe"
# Used only if the domain's own texts cannot be rendered either.
LAST_RESORT = (
    "I cannot assess your message right now. If you have trouble breathing, chest pain, a racing heart, "
    "confusion, fainting, a seizure or blue lips, call 911 now. Otherwise contact your care team."
)
_PATCHED = "_crs_failsafe"
UNTRIAGED_SLOT = "untriaged"
TRIAGE_ENTITIES = {"symptom", "therapy", "worsening"}


def emergency_symptoms(entities: list[dict[str, Any]]) -> list[str]:
    """Present symptoms of the emergency class among the NLU entities of a message."""
    kb = load_knowledge_base()
    return [
        e["value"]
        for e in entities
        if e.get("entity") == "symptom"
        and e.get("role") == "present"
        and e.get("value") in kb.symptoms
        and kb.symptom_class(e["value"]) == "emergency"
    ]


async def _failsafe_events(nlg: Any, tracker: Any, channel: str) -> list[Event]:
    entities = (tracker.latest_message.parse_data or {}).get("entities", []) if tracker.latest_message else []
    response = EMERGENCY_RESPONSE if emergency_symptoms(entities) else GENERAL_RESPONSE
    try:
        message = await nlg.generate(response, tracker, channel) or {"text": LAST_RESORT}
    except Exception:  # the reply must go out whatever failed
        log.exception("fail-safe response %s could not be rendered", response)
        message = {"text": LAST_RESORT}
    events: list[Event] = [BotUttered(message.get("text") or LAST_RESORT, metadata={"utter_action": response, "failsafe": True})]
    held = [e for e in entities if e.get("entity") in TRIAGE_ENTITIES]
    if held and UNTRIAGED_SLOT in tracker.slots:
        # kept for action_triage's next run: the symptoms of this message still count
        events.append(SlotSet(UNTRIAGED_SLOT, list(tracker.get_slot(UNTRIAGED_SLOT) or []) + held))
    return events


def install() -> None:
    """Idempotent: wrap RemoteAction.run with the fail-safe reply."""
    if getattr(RemoteAction, _PATCHED, False):
        return
    original = RemoteAction.run

    async def run(self: RemoteAction, output_channel: Any, nlg: Any, tracker: Any, domain: Any, *args: Any, **kwargs: Any) -> list[Event]:
        try:
            return await original(self, output_channel, nlg, tracker, domain, *args, **kwargs)
        except ActionExecutionRejection:
            raise
        except RasaException:
            log.error("action %s failed (action server unavailable?): sent the fail-safe reply", self.name())
            return await _failsafe_events(nlg, tracker, output_channel.name())

    RemoteAction.run = run
    setattr(RemoteAction, _PATCHED, True)

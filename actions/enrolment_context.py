"""Therapy context from the clinic's enrolment of this patient (see bot/clinic/enrolments.py).

When a patient opened the bot with `/start <code>` and the conversation does not yet know the
immunotherapy status, the enrolment's therapy and infusion date are used, so the first symptom
is already triaged with the right risk. A database problem never blocks the triage: the
patient is then simply asked about their therapy, as without an enrolment.
"""

from __future__ import annotations

import logging
from typing import Any

from actions.conversation import TriageState
from bot.clinic.enrolments import code_from_events, find
from bot.db import shared_engine

log = logging.getLogger(__name__)


def with_enrolment(state: TriageState, events: list[dict[str, Any]]) -> TriageState:
    if state.on_immunotherapy is not None:
        return state
    code = code_from_events(events)
    if not code:
        return state
    try:
        enrolment = find(shared_engine(), code)
    except Exception as exc:  # noqa: BLE001 - triage must go on without it
        log.warning("enrolment lookup failed (%s)", type(exc).__name__)
        return state
    context = enrolment.therapy_context() if enrolment else None
    if context is None:
        return state
    return state.with_therapy(True, context["therapy"], context["therapy_kind"], context["therapy_when"])

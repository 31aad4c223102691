"""One conversation as the clinic reads it: each patient message with the symptoms found
(present, denied, asked about) and its readings, each reply, each escalation with its reason,
and the check-ins sent in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.checkins.neuro import reported_entities
from bot.checkins.store import CHECKINS
from bot.clinic.labels import event_data, pseudonym, therapy_name
from bot.clinic.schema import ENROLMENTS, EVENTS, SUMMARIES


@dataclass
class Turn:
    at: float | None
    who: str  # patient | bot
    text: str
    present: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    hypothetical: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # escalations decided after this message
    level: str | None = None
    # Readings the patient gave in this message (bot/nlu/vitals.py via the `vital` entity): dicts with
    # kind (temperature | pulse | blood_pressure | spo2), value (as written: °C or °F for a temperature,
    # systolic for blood pressure), unit (C | F | /min | mmHg | %), value_c (temperature in °C),
    # diastolic (blood pressure, or None) and text (the patient's words).
    vitals: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Conversation:
    sender_id: str
    patient: str
    linked: bool
    therapy: str
    infusion_date: str | None
    level: str
    turns: list[Turn]
    symptoms: list[str]
    denied: list[str]
    therapy_id: str = ""  # the knowledge-base therapy id (enrolment, else the `therapy` slot), "" if none
    enrolment_code: str = ""  # the clinic's code for an enrolled patient (unique, unlike the label), else ""


def load_conversation(engine: Engine, sender_id: str) -> Conversation | None:
    with engine.connect() as conn:
        summary = conn.execute(
            sa.select(SUMMARIES, ENROLMENTS.c.label, ENROLMENTS.c.therapy.label("enrolled_therapy"), ENROLMENTS.c.infusion_date)
            .select_from(SUMMARIES.outerjoin(ENROLMENTS, ENROLMENTS.c.code == SUMMARIES.c.enrolment_code))
            .where(SUMMARIES.c.sender_id == sender_id)
        ).first()
        if summary is None:
            return None
        events = conn.execute(
            sa.select(EVENTS.c.type_name, EVENTS.c.timestamp, EVENTS.c.data).where(EVENTS.c.sender_id == sender_id).order_by(EVENTS.c.id)
        ).all()
        checkins = _checkin_turns(conn, sender_id)
    turns: list[Turn] = []
    shown_reasons: set[str] = set()
    slots: dict[str, Any] = {}
    last_patient: Turn | None = None
    for e in events:
        data = event_data(e.data)
        if e.type_name == "user":
            turn = Turn(e.timestamp, "patient", str(data.get("text") or ""))
            reported = reported_entities(data.get("metadata"))  # a caregiver's neuro check, not typed words
            button = ((data.get("metadata") or {}).get("telegram") or {}).get("button")
            if reported:
                turn.text = "[caregiver neuro check] " + "; ".join(str(r["evidence"]) for r in reported)
            elif button and turn.text.startswith("/"):  # a tapped button's payload: show what the patient saw
                turn.text = f"[tapped: {button}]"
            for entity in [*((data.get("parse_data") or {}).get("entities") or []), *reported]:
                # a reading of the patient now: not "what if it hits 104F", not someone else's, not an old one
                if entity.get("entity") == "vital" and entity.get("role", "measured") == "measured":
                    turn.vitals.append(vital_reading(entity))
                elif entity.get("entity") == "symptom":
                    role = entity.get("role")
                    target = {"present": turn.present, "absent": turn.denied, "hypothetical": turn.hypothetical}.get(role)
                    if target is not None and entity.get("value") not in target:
                        target.append(str(entity.get("value")))
            turns.append(turn)
            last_patient = turn
        elif e.type_name == "bot":
            turns.append(Turn(e.timestamp, "bot", str(data.get("text") or "")))
        elif e.type_name == "slot":
            slots[str(data.get("name"))] = data.get("value")
            if data.get("name") == "triage_reasons" and last_patient is not None:
                for reason in data.get("value") or []:
                    if reason not in shown_reasons:
                        shown_reasons.add(reason)
                        last_patient.reasons.append(str(reason))
            elif data.get("name") == "triage_level" and last_patient is not None:
                last_patient.level = data.get("value")
        elif e.type_name == "restart":
            shown_reasons.clear()
            slots.clear()
    if checkins:  # the assistant wrote first: in the transcript where it happened (a stable sort keeps each turn's order)
        turns = sorted(turns + checkins, key=lambda t: t.at or 0.0)
    return Conversation(
        sender_id=sender_id,
        patient=summary.label or pseudonym(sender_id),
        linked=summary.label is not None,
        therapy=therapy_name(summary.enrolled_therapy) or summary.therapy or "",
        infusion_date=summary.infusion_date,
        level=summary.level,
        turns=turns,
        symptoms=list(slots.get("symptoms") or []),
        denied=list(slots.get("denied_symptoms") or []),
        therapy_id=summary.enrolled_therapy or str(slots.get("therapy") or ""),
        enrolment_code=summary.enrolment_code or "" if summary.label is not None else "",
    )


def _checkin_turns(conn: Connection, sender_id: str) -> list[Turn]:
    """The scheduled check-ins (bot/checkins) sent to this chat: they are not Rasa events, but a
    reviewer must see what the patient was asked before a "yes"."""
    if not sa.inspect(conn).has_table(CHECKINS.name):
        return []
    rows = conn.execute(
        sa.select(CHECKINS.c.sent_at, CHECKINS.c.day, CHECKINS.c.status, CHECKINS.c.reminded_at)
        .where(CHECKINS.c.sender_id == sender_id, CHECKINS.c.sent_at.is_not(None))
        .order_by(CHECKINS.c.sent_at)
    ).all()  # fmt: skip
    turns = []
    for row in rows:
        turns.append(
            Turn(row.sent_at, "bot", f"[check-in sent, day {row.day}: temperature, and the emergency signs as one yes/no question]")
        )
        if row.reminded_at:
            turns.append(Turn(row.reminded_at, "bot", "[check-in reminder sent]"))
    return turns


def vital_reading(entity: dict[str, Any]) -> dict[str, Any]:
    """A stored `vital` entity as the reading the transcript, chart and FHIR export show."""
    return {
        "kind": str(entity.get("kind") or ""),
        "value": entity.get("value"),
        "unit": str(entity.get("unit") or ""),
        "value_c": entity.get("value_c"),
        "diastolic": entity.get("diastolic"),
        "text": str(entity.get("text") or ""),
    }

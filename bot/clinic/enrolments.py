"""Enrolment codes: how a clinic links a Telegram chat to a patient and their therapy.

An admin creates a code for a patient (label, therapy from the knowledge base, infusion date);
the patient opens the bot with `/start <code>`; the relay passes the code to Rasa as message
metadata. The clinic app then shows that chat under the label, and the triage action takes the
therapy as known (immunotherapy, which drug, when), so CAR-T and T-cell-engager patients get
the highest-risk handling without being asked.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import date
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.checkins.store import CHECKINS
from bot.clinic.schema import ENROLMENTS
from bot.nlu.knowledge import load_knowledge_base

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud or typed from paper


class EnrolmentError(ValueError):
    pass


@dataclass(frozen=True)
class Enrolment:
    code: str
    label: str
    therapy: str  # knowledge-base therapy id, or "" when none
    infusion_date: str | None

    def therapy_context(self) -> dict[str, Any] | None:
        """Slots the triage takes from this enrolment (None if no therapy is recorded)."""
        therapy = load_knowledge_base().therapy(self.therapy) if self.therapy else None
        if therapy is None:
            return None
        return {
            "on_immunotherapy": True,
            "therapy": therapy.name,
            "therapy_kind": therapy.kind,
            "therapy_when": f"infusion {self.infusion_date}" if self.infusion_date else None,
        }


def new_code() -> str:
    raw = "".join(secrets.choice(CODE_ALPHABET) for _ in range(8))
    return f"{raw[:4]}-{raw[4:]}"


def create(engine: Engine, label: str, therapy: str, infusion_date: str, created_by: str) -> Enrolment:
    label = " ".join(label.split())[:120]
    if not label:
        raise EnrolmentError("a patient label is needed")
    if therapy and load_knowledge_base().therapy(therapy) is None:
        raise EnrolmentError("unknown therapy")
    day: str | None = None
    if infusion_date:
        try:
            day = date.fromisoformat(infusion_date).isoformat()
        except ValueError:
            raise EnrolmentError("infusion date must be YYYY-MM-DD") from None
    enrolment = Enrolment(new_code(), label, therapy, day)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code=enrolment.code, label=label, therapy=therapy, infusion_date=day, created_by=created_by, created_at=time.time()
            )
        )
    return enrolment


def find(engine: Engine, code: str) -> Enrolment | None:
    code = code.strip().upper()
    with engine.connect() as conn:
        row = conn.execute(sa.select(ENROLMENTS).where(ENROLMENTS.c.code == code)).mappings().first()
    return Enrolment(row["code"], row["label"], row["therapy"], row["infusion_date"]) if row else None


CHECKIN_STATES = ("active", "paused", "stopped")


def set_checkins(engine: Engine, code: str, state: str) -> bool:
    """The clinic pauses, resumes or stops an enrolment's check-ins (bot/checkins)."""
    if state not in CHECKIN_STATES:
        raise EnrolmentError(f"check-ins must be one of {', '.join(CHECKIN_STATES)}")
    with engine.begin() as conn:
        return bool(conn.execute(sa.update(ENROLMENTS).where(ENROLMENTS.c.code == code.strip().upper()).values(checkins=state)).rowcount)


def checkins_of(engine: Engine, code: str, limit: int = 200) -> list[dict[str, Any]]:
    """The enrolment's check-ins, newest first: when, its status, when sent, reminded, answered."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(CHECKINS).where(CHECKINS.c.code == code).order_by(CHECKINS.c.due_at.desc()).limit(limit)).mappings()
        return [dict(r) for r in rows]


def all_enrolments(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(ENROLMENTS).order_by(ENROLMENTS.c.created_at.desc())).mappings()]


def code_from_events(events: list[dict[str, Any]]) -> str | None:
    """The latest enrolment code a patient sent (relay metadata of user messages)."""
    for event in reversed(events):
        if event.get("event") == "user":
            code = ((event.get("metadata") or {}).get("telegram") or {}).get("enrolment_code")
            if code:
                return str(code)
    return None

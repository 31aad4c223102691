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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.checkins.store import CHATS, CHECKINS, NEURO_CHECKS
from bot.clinic.schema import ENROLMENTS
from bot.clinical.knowledge import load_knowledge_base

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud or typed from paper


class EnrolmentError(ValueError):
    pass


@dataclass(frozen=True)
class Enrolment:
    code: str
    label: str
    therapy: str  # knowledge-base therapy id, or "" when none
    infusion_date: str | None
    timezone: str | None = None  # the patient's, for check-in times (CLINIC_TIMEZONE when None)
    dose_dates: tuple[str, ...] = ()  # later step-up doses (ISO dates)
    checkins: str = "active"

    @property
    def anchors(self) -> list[date]:
        """The dates check-in schedules count days from, read as the scheduler reads them (none if one is malformed)."""
        from bot.checkins.schedule import dose_anchors

        try:
            return dose_anchors(self.infusion_date, ",".join(self.dose_dates))
        except ValueError:
            return []

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


def create(
    engine: Engine, label: str, therapy: str, infusion_date: str, created_by: str, timezone: str = "", dose_dates: str = ""
) -> Enrolment:
    label = " ".join(label.split())[:120]
    if not label:
        raise EnrolmentError("a patient label is needed")
    if therapy and load_knowledge_base().therapy(therapy) is None:
        raise EnrolmentError("unknown therapy")
    day = _iso_date(infusion_date, "infusion date") if infusion_date else None
    zone = timezone.strip() or None
    if zone is not None:
        try:
            ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise EnrolmentError("time zone must be a name like America/Chicago") from None
    doses = tuple(sorted({_iso_date(d.strip(), "dose dates") for d in dose_dates.replace(";", ",").split(",") if d.strip()}))
    if len(doses) > 8:
        raise EnrolmentError("at most 8 later dose dates")
    if doses and day is None:
        raise EnrolmentError("later dose dates need the first dose (infusion) date")
    if doses and day is not None and doses[0] <= day:
        raise EnrolmentError("later dose dates must come after the infusion date")
    enrolment = Enrolment(new_code(), label, therapy, day, zone, doses)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code=enrolment.code, label=label, therapy=therapy, infusion_date=day, created_by=created_by, created_at=time.time(),
                timezone=zone, dose_dates=",".join(doses) or None,
            )
        )  # fmt: skip
    return enrolment


def _iso_date(value: str, what: str) -> str:
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise EnrolmentError(f"{what} must be YYYY-MM-DD") from None


def find(engine: Engine, code: str) -> Enrolment | None:
    code = code.strip().upper()
    with engine.connect() as conn:
        row = conn.execute(sa.select(ENROLMENTS).where(ENROLMENTS.c.code == code)).mappings().first()
    return _enrolment(row) if row else None


def _enrolment(row: Any) -> Enrolment:
    doses = tuple(d for d in (row["dose_dates"] or "").split(",") if d)
    return Enrolment(row["code"], row["label"], row["therapy"], row["infusion_date"], row["timezone"], doses, row["checkins"])


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


@dataclass(frozen=True)
class CheckinPlan:
    """What the patient page says about an enrolment's check-ins: on or not, and why; what comes next."""

    state: str  # the clinic's: active | paused | stopped
    linked: bool  # a chat sent /start <code>
    opted_out: bool  # the patient sent /checkins off
    zone: str
    upcoming: list[Any]  # bot.checkins.schedule.Due, the next ones

    @property
    def running(self) -> bool:
        return self.state == "active" and self.linked and not self.opted_out


def checkin_plan(engine: Engine, enrolment: Enrolment, default_zone: str, now: float, days: int = 7) -> CheckinPlan:
    """The schedule of data/checkins.yml applied to this enrolment for the next `days` days."""
    from bot.checkins.schedule import due_for, load_checkin_config

    with engine.connect() as conn:
        chat = conn.execute(sa.select(CHATS.c.opted_out).where(CHATS.c.code == enrolment.code)).first()
    zone = enrolment.timezone or default_zone
    therapy = load_knowledge_base().therapy(enrolment.therapy) if enrolment.therapy else None
    upcoming = []
    if therapy is not None and enrolment.anchors:
        upcoming = due_for(load_checkin_config(), enrolment.code, therapy.kind, enrolment.anchors, ZoneInfo(zone), now, now + days * 86400)
    return CheckinPlan(enrolment.checkins, chat is not None, bool(chat and chat.opted_out), zone, upcoming)


def overdue_checkins(engine: Engine, now: float, limit: int = 100) -> list[dict[str, Any]]:
    """Check-ins sent and still unanswered past their reminder, oldest first: who is overdue before
    it becomes a "no response" worklist item (`missed_after_min`)."""
    from bot.checkins.schedule import load_checkin_config

    config = load_checkin_config()
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(CHECKINS.c.code, CHECKINS.c.due_at, CHECKINS.c.day, CHECKINS.c.missed_level, CHECKINS.c.reminded_at)
            .add_columns(ENROLMENTS.c.label)
            .select_from(CHECKINS.join(ENROLMENTS, ENROLMENTS.c.code == CHECKINS.c.code))
            .where(CHECKINS.c.status == "sent", CHECKINS.c.due_at <= now - config.remind_after_s)
            .order_by(CHECKINS.c.due_at)
            .limit(limit)
        ).mappings()  # fmt: skip
        return [{**r, "missed_at": r["due_at"] + config.missed_after_s} for r in rows]


def neuro_checks_of(engine: Engine, code: str, limit: int = 200) -> list[dict[str, Any]]:
    """The caregiver neuro checks done in this enrolment's chat, oldest first (scores over time)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(NEURO_CHECKS).where(NEURO_CHECKS.c.code == code).order_by(NEURO_CHECKS.c.started_at.desc()).limit(limit)
        ).mappings()  # fmt: skip
        return [dict(r) for r in reversed(list(rows))]


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

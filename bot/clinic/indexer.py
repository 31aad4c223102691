"""Folds new tracker events into one summary row per conversation (`refresh`, run by the clinic
worker every second), and returns the conversations that reached a new level, which is what
worklist items and alerts are raised from.

Rasa's `events.id` only grows, so each run reads the events after the last id it folded; a list
page then reads one indexed table, whatever the number of events.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from bot.clinic.labels import TRAFFIC_KEY, event_data
from bot.clinic.schema import EVENTS, STATE, SUMMARIES
from bot.clinic.worklist import Episodes, Tracking
from bot.clinical.knowledge import LEVEL_RANK

log = logging.getLogger("bot.clinic")

BATCH = 5000


@dataclass
class _Summary:
    sender_id: str
    enrolment_code: str | None = None
    first_at: float | None = None
    last_at: float | None = None
    level_rank: int = 0
    level: str = "none"
    symptoms: str = ""
    therapy: str = ""
    messages: int = 0
    test: bool = False
    new: bool = True

    def row(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "new"}


class _Overtaken(Exception):
    """Another clinic instance folded this batch first: roll back ours."""


# An event id missing from the sequence is usually a transaction still committing (two Rasa
# replicas on PostgreSQL commit out of id order): wait for it this long before skipping it,
# or an emergency inserted just below the mark would never be indexed nor alerted.
GAP_WAIT_S = 10.0


_gaps: dict[int, float] = {}  # first missing id → when it was first seen missing (this process)


def _contiguous(rows: list[Any], mark: int, now: float) -> list[Any]:
    """The rows up to the first id gap that is younger than GAP_WAIT_S."""
    usable, expected = [], mark + 1
    for r in rows:
        if r.id != expected and now - _gaps.setdefault(expected, now) < GAP_WAIT_S:
            break
        usable.append(r)
        expected = r.id + 1
    for missing in [k for k in _gaps if k <= mark]:
        del _gaps[missing]
    return usable


def refresh(engine: Engine, tracking: Tracking | None = None) -> list[tuple[str, str]]:
    """Fold new events into the summaries and, with `tracking`, open and raise worklist items
    and queue their alerts in the same transaction; returns (sender_id, level) for each new
    highest level a conversation reached.

    Several clinic instances may run this at once: the mark moves only from the value this
    transaction read, so a batch another instance folded first is rolled back here, never
    folded twice (no second item, no second alert)."""
    reached: list[tuple[str, str]] = []
    while True:
        try:
            with engine.begin() as conn:
                mark = int(conn.execute(sa.select(STATE.c.value).where(STATE.c.key == "events_id")).scalar() or 0)
                rows = conn.execute(
                    sa.select(EVENTS.c.id, EVENTS.c.sender_id, EVENTS.c.type_name, EVENTS.c.timestamp, EVENTS.c.data)
                    .where(EVENTS.c.id > mark)
                    .order_by(EVENTS.c.id)
                    .limit(BATCH)
                ).all()
                usable = _contiguous(rows, mark, time.monotonic())
                if not usable:
                    return reached
                found = _fold(conn, usable, tracking)
                last = usable[-1].id
                if mark:
                    moved = conn.execute(
                        sa.update(STATE).where(STATE.c.key == "events_id", STATE.c.value == mark).values(value=last)
                    ).rowcount  # fmt: skip
                    if moved != 1:
                        raise _Overtaken
                else:
                    conn.execute(sa.insert(STATE).values(key="events_id", value=last))  # a second instance's insert fails
        except _Overtaken:
            return reached
        except sa.exc.IntegrityError:
            return reached  # both instances' first run: the other one inserted the mark
        reached += found
        if len(usable) < BATCH:
            return reached


def _fold(conn: Connection, rows: list[Any], tracking: Tracking | None = None) -> list[tuple[str, str]]:
    senders = {r.sender_id for r in rows}
    summaries: dict[str, _Summary] = {}
    for row in conn.execute(sa.select(SUMMARIES).where(SUMMARIES.c.sender_id.in_(senders))).mappings():
        summaries[row["sender_id"]] = _Summary(**dict(row), new=False)
    episodes = Episodes(conn, tracking, senders) if tracking and tracking.levels else None
    current: dict[str, str] = {}  # the level each conversation is at now, as far as this batch tells
    reached: list[tuple[str, str]] = []
    for r in rows:
        try:
            _fold_one(r, summaries, episodes, current, reached)
        except (TypeError, ValueError, AttributeError, KeyError) as exc:
            # one malformed event must not stop the indexing (and every alert after it)
            log.error("clinic.refresh.bad_event id=%s type=%s error=%s", r.id, r.type_name, type(exc).__name__)
    for s in summaries.values():
        if s.new:
            conn.execute(sa.insert(SUMMARIES).values(**s.row()))
        else:
            conn.execute(sa.update(SUMMARIES).where(SUMMARIES.c.sender_id == s.sender_id).values(**s.row()))
    return reached


def _fold_one(
    r: Any, summaries: dict[str, _Summary], episodes: Episodes | None, current: dict[str, str], reached: list[tuple[str, str]]
) -> None:
    """One event into its conversation's summary (and worklist item)."""
    s = summaries.setdefault(r.sender_id, _Summary(r.sender_id))
    if r.timestamp is not None:
        s.first_at = r.timestamp if s.first_at is None else min(s.first_at, r.timestamp)
        s.last_at = r.timestamp if s.last_at is None else max(s.last_at, r.timestamp)
    data = event_data(r.data)
    at = r.timestamp or time.time()
    if r.type_name == "user":
        s.messages += 1
        metadata = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
        telegram = metadata["telegram"] if isinstance(metadata.get("telegram"), dict) else {}
        if telegram.get("enrolment_code"):
            s.enrolment_code = str(telegram["enrolment_code"]).strip().upper()[:64]
        if metadata.get(TRAFFIC_KEY) == "test":
            s.test = True  # once test, always: one tagged message marks the whole conversation
        if episodes and not s.test:
            # "I still can't breathe" after the item was closed: same reasons, so no slot
            # changes; the present emergency in the message itself reopens the worklist
            entities = (data.get("parse_data") or {}).get("entities") or []
            said = [(str(e.get("value")), str(e.get("text") or "")) for e in entities if isinstance(e, dict) and _present_symptom(e)]
            if said:
                episodes.reported(r.sender_id, said, str(data.get("text") or ""), at)
    elif r.type_name == "slot":
        name, value = data.get("name"), data.get("value")
        if name == "triage_level" and value in LEVEL_RANK:
            current[r.sender_id] = value
            if episodes and not s.test:
                episodes.level(r.sender_id, value, at)
            if LEVEL_RANK[value] > s.level_rank:
                s.level_rank, s.level = LEVEL_RANK[value], value
                reached.append((r.sender_id, value))
        elif name == "triage_reasons" and episodes and not s.test and isinstance(value, list):
            episodes.reasons(r.sender_id, [str(v) for v in value], current.get(r.sender_id, s.level), at)
        elif name == "symptoms":
            s.symptoms = " ".join(str(v) for v in value or [])
        elif name == "therapy":
            s.therapy = str(value or "")[:120]


def _present_symptom(entity: dict[str, Any]) -> bool:
    return entity.get("entity") == "symptom" and entity.get("role") == "present"

"""The care team's worklist: who owns each alert, how fast it was handled, and escalation.

An item opens when a conversation reaches a level in `CLINIC_ALERT_LEVELS` (emergency by
default), from the same pass that keeps the summaries (bot/clinic/indexer.py), in the
same transaction, so an item and its first alert notices are never lost or doubled by a crash
or a second clinic instance. While an item is open, a higher level raises it (and restarts its
escalation clock) and new reasons are added to it. Once closed, the next alerting reason in
that conversation (a patient's second emergency days later) opens a new item.

A signed-in nurse acknowledges an item (who, when) and closes it with an outcome and a note.
An item not acknowledged within `CLINIC_ESCALATE_AFTER` of reaching its level is sent once
more, to the escalation channel. Every action is audited by the web app.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from bot.clinic.schema import ALERTS, AUDIT, ENROLMENTS, SUMMARIES, WORKLIST
from bot.clinical.knowledge import LEVEL_RANK, load_knowledge_base

# What a nurse records when closing an item (value stored → label shown).
OUTCOMES = {
    "called_back": "Called the patient back",
    "sent_to_ed": "Sent to the emergency department",
    "advised_come_in": "Advised to come in",
    "no_action": "No action needed",
    "wrong_or_test": "Wrong number / test",
}
DEFAULT_ESCALATE_AFTER = {"emergency": 10.0, "urgent": 60.0, "monitor": 240.0}  # minutes
_REASON_LEVEL = re.compile(r"→ (" + "|".join(LEVEL_RANK) + r") \([^()]*\)\s*$")
NOTE_CHARS = 2000


def parse_escalate_after(value: str | None) -> dict[str, float]:
    """`CLINIC_ESCALATE_AFTER` in minutes: "emergency=10,urgent=60", or one number for every
    level. Levels not named keep their defaults. Raises ValueError on anything else."""
    minutes = dict(DEFAULT_ESCALATE_AFTER)
    text = (value or "").strip()
    if not text:
        return minutes
    if "=" not in text:
        minutes = {level: float(text) for level in minutes}
    else:
        for part in text.split(","):
            level, _, number = part.partition("=")
            level = level.strip()
            if level not in LEVEL_RANK:
                raise ValueError(f"CLINIC_ESCALATE_AFTER: unknown level {level!r}")
            minutes[level] = float(number)
    if not all(0 < m < float("inf") for m in minutes.values()):  # also refuses nan
        raise ValueError("CLINIC_ESCALATE_AFTER: minutes must be positive numbers")
    return minutes


def reason_level(reason: str) -> str | None:
    """The level a triage reason line ends with ("… → emergency (emergency symptom)")."""
    m = _REASON_LEVEL.search(reason)
    return m.group(1) if m else None


@dataclass(frozen=True)
class Tracking:
    """What opens items and which notices each opened or raised item queues."""

    levels: tuple[str, ...]
    channels: tuple[str, ...] = ()

    def alerts(self, level: str) -> bool:
        return level in self.levels


class Episodes:
    """Items of the conversations in one batch of events, kept in step with the database."""

    def __init__(self, conn: Connection, tracking: Tracking, senders: Iterable[str]) -> None:
        self.conn, self.tracking = conn, tracking
        self.latest: dict[str, dict[str, Any]] = {}
        self.known: dict[str, set[str]] = {}  # every reason already on one of the conversation's items
        rows = conn.execute(
            sa.select(WORKLIST).where(WORKLIST.c.sender_id.in_(list(senders))).order_by(WORKLIST.c.id)
        ).mappings()  # fmt: skip
        for row in rows:
            self.latest[row["sender_id"]] = dict(row)
            self.known.setdefault(row["sender_id"], set()).update(row["reasons"].splitlines())

    def level(self, sender_id: str, level: str, at: float) -> None:
        """The conversation's triage level changed to `level` (slot events are only stored on change)."""
        if self.tracking.alerts(level):
            self._raise(sender_id, level, at, [])

    def reasons(self, sender_id: str, reasons: list[str], level_now: str, at: float) -> None:
        """The conversation's reasons grew: an alerting reason not on the latest item is new."""
        item = self.latest.get(sender_id)
        new = [r for r in reasons if r not in self.known.get(sender_id, set())]
        alerting = [r for r in new if self.tracking.alerts(reason_level(r) or level_now)]
        if item is not None and item["closed_at"] is None and new:
            top = max((reason_level(r) or level_now for r in new), key=lambda lv: LEVEL_RANK.get(lv, 0))
            self._raise(sender_id, top if self.tracking.alerts(top) else item["level"], at, new)
        elif alerting:
            top = max((reason_level(r) or level_now for r in alerting), key=lambda lv: LEVEL_RANK.get(lv, 0))
            self._raise(sender_id, top, at, alerting)

    def reported(self, sender_id: str, said: list[tuple[str, str]], text: str, at: float) -> None:
        """A patient message with present symptoms. After the conversation's last item was
        closed, a symptom whose class alerts for sure (emergency → emergency, serious → urgent)
        opens a new item even when the triage reasons stay the same ("I still can't breathe")."""
        item = self.latest.get(sender_id)
        if item is None or item["closed_at"] is None:
            return  # no item yet: the triage slots open it; an open item: it is being handled
        kb = load_knowledge_base()
        found = []
        for symptom, words in said:
            cls = kb.symptoms[symptom].cls if symptom in kb.symptoms else None
            level = {"emergency": "emergency", "serious": "urgent"}.get(cls or "")
            if level and self.tracking.alerts(level):
                quoted = (words or text)[:120]
                found.append((level, f'said "{quoted}" → {symptom} → {level} (reported again after the last item was closed)'))
        if found:
            top = max((lv for lv, _ in found), key=lambda lv: LEVEL_RANK.get(lv, 0))
            self._raise(sender_id, top, at, [reason for _, reason in found])

    def _raise(self, sender_id: str, level: str, at: float, reasons: list[str]) -> None:
        self.known.setdefault(sender_id, set()).update(reasons)
        item = self.latest.get(sender_id)
        rank = LEVEL_RANK.get(level, 0)
        if item is None or item["closed_at"] is not None:
            values: dict[str, Any] = {
                "sender_id": sender_id, "level": level, "level_rank": rank, "reasons": "\n".join(reasons),
                "opened_at": at, "level_at": at, "note": "",
            }  # fmt: skip
            values["id"] = self.conn.execute(sa.insert(WORKLIST).values(**values)).inserted_primary_key[0]
            self.latest[sender_id] = {**values, "acked_at": None, "closed_at": None, "escalated_at": None}
            self._notify(values["id"], sender_id, level, at)
            return
        changes: dict[str, Any] = {}
        if rank > item["level_rank"]:
            # a higher level is a new alert, and its own escalation clock, even if acknowledged
            changes.update(level=level, level_rank=rank, level_at=at, acked_at=None, acked_by=None, escalated_at=None)
        merged = item["reasons"].splitlines() + [r for r in reasons if r not in item["reasons"].splitlines()]
        if len(merged) != len(item["reasons"].splitlines()):
            changes["reasons"] = "\n".join(merged)
        if changes:
            moved = self.conn.execute(
                sa.update(WORKLIST).where(WORKLIST.c.id == item["id"], WORKLIST.c.closed_at.is_(None)).values(**changes)
            ).rowcount
            if not moved:  # a nurse closed it a moment ago: this is a new episode, not an old one
                item["closed_at"] = at
                self._raise(sender_id, level, at, reasons or item["reasons"].splitlines())
                return
            item.update(changes)
            if "level" in changes:
                self._notify(item["id"], sender_id, level, at)

    def _notify(self, item_id: int, sender_id: str, level: str, at: float) -> None:
        for channel in self.tracking.channels:
            self.conn.execute(
                sa.insert(ALERTS).values(
                    item_id=item_id, sender_id=sender_id, level=level, kind="alert", channel=channel, status="pending",
                    attempts=0, last_error="", created_at=time.time(), next_try_at=time.time(),
                )
            )  # fmt: skip


def open_item(conn: Connection, tracking: Tracking, sender_id: str, level: str, at: float, reason: str) -> None:
    """An item decided outside the triage slots (bot/checkins: a check-in nobody answered, an
    emergency sign reported with a button): opened whatever the alert levels say, alerting when
    its level alerts; added to the conversation's open item if it has one."""
    episodes = Episodes(conn, Tracking(levels=(level,), channels=tracking.channels if tracking.alerts(level) else ()), [sender_id])
    episodes._raise(sender_id, level, at, [reason])


# ---------------------------------------------------------------------- nurses' actions
class WorklistError(ValueError):
    pass


def acknowledge(engine: Engine, item_id: int, username: str, level: str | None = None, now: float | None = None) -> bool:
    """Mark an open item seen by `username`; False if it was already acknowledged or is closed.

    `level`: the level the nurse saw. An item raised since (urgent → emergency) is refused
    with WorklistError: the nurse must look again before owning an emergency."""
    now = now or time.time()
    with engine.begin() as conn:
        _check_level(conn, item_id, level)
        done = conn.execute(
            sa.update(WORKLIST)
            .where(WORKLIST.c.id == item_id, WORKLIST.c.acked_at.is_(None), WORKLIST.c.closed_at.is_(None))
            .values(acked_at=now, acked_by=username)
        ).rowcount
        if done:  # on-call need not be paged for an item someone owns
            _cancel_notices(conn, item_id, now, kinds=("escalation",))
    return bool(done)


def close(engine: Engine, item_id: int, username: str, outcome: str, note: str, level: str | None = None, now: float | None = None) -> None:
    """Close an item with what was done; closing an unacknowledged item acknowledges it too."""
    if outcome not in OUTCOMES:
        raise WorklistError("Choose what was done.")
    now = now or time.time()
    with engine.begin() as conn:
        item = _check_level(conn, item_id, level)
        if item["closed_at"] is not None:
            raise WorklistError("This item is already closed.")
        values: dict[str, Any] = {"closed_at": now, "closed_by": username, "outcome": outcome, "note": note.strip()[:NOTE_CHARS]}
        if item["acked_at"] is None:
            values.update(acked_at=now, acked_by=username)
        still = (WORKLIST.c.id == item_id, WORKLIST.c.closed_at.is_(None), WORKLIST.c.level == item["level"])
        done = conn.execute(sa.update(WORKLIST).where(*still).values(**values)).rowcount
        if not done:
            raise WorklistError("Someone else closed this item, or it was raised, a moment ago; look again.")
        _cancel_notices(conn, item_id, now, kinds=("alert", "escalation"))


def _check_level(conn: Connection, item_id: int, level: str | None) -> Any:
    item = conn.execute(sa.select(WORKLIST).where(WORKLIST.c.id == item_id)).mappings().first()
    if item is None:
        raise WorklistError("No such item.")
    if level is not None and item["level"] != level:
        raise WorklistError(f"This item was raised to {item['level']} since you opened the page; look again before acting on it.")
    return item


def _cancel_notices(conn: Connection, item_id: int, now: float, kinds: tuple[str, ...]) -> None:
    conn.execute(
        sa.update(ALERTS)
        .where(ALERTS.c.item_id == item_id, ALERTS.c.kind.in_(kinds), ALERTS.c.status != "sent")
        .values(status="cancelled", last_error="handled before it was delivered", sent_at=None, next_try_at=now)
    )


# ---------------------------------------------------------------------- reading
@dataclass(frozen=True)
class Item:
    id: int
    sender_id: str
    patient: str
    enrolment_code: str | None
    level: str
    reasons: list[str]
    opened_at: float
    level_at: float
    acked_at: float | None
    acked_by: str | None
    closed_at: float | None
    closed_by: str | None
    outcome: str | None
    note: str
    escalated_at: float | None

    @property
    def status(self) -> str:
        return "closed" if self.closed_at else "acknowledged" if self.acked_at else "open"

    @property
    def outcome_label(self) -> str:
        return OUTCOMES.get(self.outcome or "", "")

    def age(self, now: float) -> float:
        return (self.closed_at or now) - self.opened_at


STATUSES = ("open", "closed", "all")  # open = not closed (acknowledged or not)


def _select() -> Any:
    joined = WORKLIST.join(SUMMARIES, SUMMARIES.c.sender_id == WORKLIST.c.sender_id, isouter=True).join(
        ENROLMENTS, ENROLMENTS.c.code == SUMMARIES.c.enrolment_code, isouter=True
    )
    return sa.select(WORKLIST, ENROLMENTS.c.label, SUMMARIES.c.enrolment_code).select_from(joined)


def _item(row: Mapping[str, Any]) -> Item:
    from bot.clinic.labels import pseudonym

    return Item(
        id=row["id"], sender_id=row["sender_id"], patient=row["label"] or pseudonym(row["sender_id"]),
        enrolment_code=row["enrolment_code"] if row["label"] else None, level=row["level"],
        reasons=[r for r in (row["reasons"] or "").splitlines() if r], opened_at=row["opened_at"], level_at=row["level_at"],
        acked_at=row["acked_at"], acked_by=row["acked_by"], closed_at=row["closed_at"], closed_by=row["closed_by"],
        outcome=row["outcome"], note=row["note"] or "", escalated_at=row["escalated_at"],
    )  # fmt: skip


def items(engine: Engine, status: str = "open", level: str = "", limit: int = 100, offset: int = 0) -> tuple[list[Item], int]:
    """Items, open first (most severe, then oldest: the one waiting longest), then the most
    recently closed; and how many match."""
    conditions: list[Any] = []
    if status == "open":
        conditions.append(WORKLIST.c.closed_at.is_(None))
    elif status == "closed":
        conditions.append(WORKLIST.c.closed_at.is_not(None))
    if level in LEVEL_RANK:
        conditions.append(WORKLIST.c.level == level)
    order = [
        WORKLIST.c.closed_at.is_not(None),
        sa.case((WORKLIST.c.closed_at.is_(None), -WORKLIST.c.level_rank), else_=0),
        sa.case((WORKLIST.c.closed_at.is_(None), WORKLIST.c.opened_at), else_=-WORKLIST.c.closed_at),
        WORKLIST.c.id,
    ]
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(WORKLIST).where(*conditions)).scalar_one()
        rows = conn.execute(_select().where(*conditions).order_by(*order).limit(limit).offset(offset)).mappings().all()
    return [_item(r) for r in rows], int(total)


def item(engine: Engine, item_id: int) -> Item | None:
    with engine.connect() as conn:
        row = conn.execute(_select().where(WORKLIST.c.id == item_id)).mappings().first()
    return _item(row) if row else None


def for_conversation(engine: Engine, sender_id: str) -> list[Item]:
    with engine.connect() as conn:
        rows = conn.execute(_select().where(WORKLIST.c.sender_id == sender_id).order_by(WORKLIST.c.id)).mappings().all()
    return [_item(r) for r in rows]


def open_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(WORKLIST).where(WORKLIST.c.closed_at.is_(None))).scalar_one())


# ---------------------------------------------------------------------- escalation
def escalate_due(engine: Engine, escalate_after: Mapping[str, float], channels: Iterable[str], now: float | None = None) -> list[int]:
    """Queue one escalation notice per channel for each open item not acknowledged within its
    level's minutes; each item escalates once per level. Returns the escalated items' ids."""
    now = now or time.time()
    channels = list(channels)
    escalated: list[int] = []
    if not channels:
        return escalated  # nowhere to send: the worklist shows the item as overdue instead
    with engine.begin() as conn:
        rows = conn.execute(
            sa.select(WORKLIST.c.id, WORKLIST.c.sender_id, WORKLIST.c.level, WORKLIST.c.level_at).where(
                WORKLIST.c.closed_at.is_(None), WORKLIST.c.acked_at.is_(None), WORKLIST.c.escalated_at.is_(None)
            )
        ).all()
        for row in rows:
            if now < row.level_at + escalate_after.get(row.level, DEFAULT_ESCALATE_AFTER["emergency"]) * 60:
                continue
            claimed = conn.execute(
                sa.update(WORKLIST).where(WORKLIST.c.id == row.id, WORKLIST.c.escalated_at.is_(None)).values(escalated_at=now)
            ).rowcount
            if not claimed:
                continue
            escalated.append(row.id)
            conn.execute(
                sa.insert(AUDIT).values(
                    at=now, username="system", action="escalate-item", target=f"item {row.id}",
                    detail=f"level={row.level} not acknowledged for {escalate_after.get(row.level, 0):g} min; to {','.join(channels)}",
                )
            )  # fmt: skip
            for channel in channels:
                try:
                    with conn.begin_nested():
                        conn.execute(
                            sa.insert(ALERTS).values(
                                item_id=row.id, sender_id=row.sender_id, level=row.level, kind="escalation", channel=channel,
                                status="pending", attempts=0, last_error="", created_at=now, next_try_at=now,
                            )
                        )  # fmt: skip
                except IntegrityError:
                    pass  # sent once already at this level
    return escalated


# ---------------------------------------------------------------------- response times
def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def response_times(
    engine: Engine, levels: Iterable[str], windows: Iterable[int] = (7, 30), now: float | None = None
) -> list[dict[str, Any]]:
    """Per level and window (days, by when the item opened): items, open and unacknowledged ones,
    and p50/p90 of the seconds to acknowledge (from reaching the level) and to close (from
    opening), over the items that were."""
    now = now or time.time()
    windows = list(windows)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(WORKLIST.c.level, WORKLIST.c.opened_at, WORKLIST.c.level_at, WORKLIST.c.acked_at, WORKLIST.c.closed_at).where(
                WORKLIST.c.opened_at >= now - max(windows) * 86400
            )
        ).all()
    table = []
    for level in levels:
        for days in windows:
            mine = [r for r in rows if r.level == level and r.opened_at >= now - days * 86400]
            # to acknowledge: from when the item reached its level (a raised item is acknowledged anew)
            ack = [r.acked_at - r.level_at for r in mine if r.acked_at is not None]
            done = [r.closed_at - r.opened_at for r in mine if r.closed_at is not None]
            table.append(
                {
                    "level": level, "days": days, "items": len(mine), "open": sum(1 for r in mine if r.closed_at is None),
                    "unacknowledged": sum(1 for r in mine if r.acked_at is None),
                    "ack_p50": _percentile(ack, 0.5), "ack_p90": _percentile(ack, 0.9),
                    "close_p50": _percentile(done, 0.5), "close_p90": _percentile(done, 0.9),
                }
            )  # fmt: skip
    return table


def duration(seconds: float | None) -> str:
    """How long, the way a nurse reads it: 45 s, 12 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return "–"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"

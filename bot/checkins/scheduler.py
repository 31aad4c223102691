"""Sends enrolled patients their check-ins: once each, on time, never a stale burst.

`tick()` runs every `tick_s` (data/checkins.yml) in the relay (and in tests with a controlled clock):
1. For each linked, enrolled chat whose check-ins are on, the check-ins that fell due since it
   last could have looked (schedule.due_between) are claimed by inserting their row: the
   primary key makes the insert the claim, so two relay replicas, or one restarted, send each
   check-in once. One whose time passed more than `stale_after` ago (no relay was running) is
   recorded `not_sent` instead: a patient never gets a burst of old questions.
2. A claimed check-in is sent; a claim whose owner died before sending is taken over after
   `CLAIM_LEASE_S`, while it is still fresh.
3. A sent check-in nobody answered gets one reminder after `remind_after`; still nothing after
   `missed_after` opens a clinic worklist item "no response" at the level of that day's schedule
   entry (a missed check-in in the highest-risk days is itself a reason to call).
`answered()` is called by the relay for every message from a linked chat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from telegram.error import BadRequest, Forbidden, NetworkError

from bot.checkins.neuro import START as NEURO_START
from bot.checkins.schedule import CheckinConfig, Due, dose_anchors, due_for
from bot.checkins.store import CHATS, CHECKINS
from bot.clinic import worklist
from bot.clinic.schema import ENROLMENTS
from bot.clinical.knowledge import load_knowledge_base

log = logging.getLogger("bot.checkins")
CLAIM_LEASE_S = 120.0
LOOKBACK_S = 86400.0
# (chat id, text, buttons as (title, callback data)) → sent; raises if Telegram refused it
Send = Callable[[int, str, list[tuple[str, str]]], Awaitable[None]]
BUTTON_NONE, BUTTON_YES = "checkin:none", "checkin:yes"


@dataclass(frozen=True)
class Texts:
    checkin: str
    neuro_offer: str
    reminder: str
    button_none: str
    button_yes: str
    checkins_off: str
    checkins_on: str
    checkins_usage: str
    not_enrolled: str

    @classmethod
    def of(cls, config: CheckinConfig) -> Texts:
        """The `texts:` of data/checkins.yml (every one must be there)."""
        raw = dict(config.texts)
        missing = [k for k in cls.__dataclass_fields__ if k not in raw]
        if missing:
            raise ValueError(f"data/checkins.yml texts: missing {', '.join(missing)}")
        return cls(**{k: raw[k].strip() for k in cls.__dataclass_fields__})


class CheckinScheduler:
    def __init__(
        self,
        engine: Engine,
        config: CheckinConfig,
        texts: Texts,
        send: Send,
        owner: str,
        tracking: worklist.Tracking,
        default_zone: str = "UTC",
        clock: Callable[[], float] = time.time,
        send_rate: float | None = None,
        neuro_button: str | None = None,
    ) -> None:
        self.neuro_button = neuro_button  # the check-ins that offer the neuro check carry a button to start it
        self.engine, self.config, self.texts, self.send, self.owner = engine, config, texts, send, owner
        self.tracking, self.default_zone, self.clock = tracking, ZoneInfo(default_zone), clock
        # check-ins per second at most: the rest of Telegram's budget stays for patients' replies
        self.send_interval = 1.0 / send_rate if send_rate else 0.0

    # ------------------------------------------------------------------ one round
    async def tick(self) -> dict[str, int]:
        """One round; returns how many check-ins were sent, reminded, missed and recorded not sent."""
        now = self.clock()
        candidates, not_sent = await asyncio.to_thread(self._due_rows, now)
        sent = 0
        for row in candidates:
            # claimed just before it is sent (not all at once): a claim another replica sees
            # unsent for CLAIM_LEASE_S really was abandoned, however long the queue
            if not await asyncio.to_thread(self._claim, row):
                continue
            if self.send_interval:
                await asyncio.sleep(self.send_interval)
            delivered, maybe_delivered = await self._deliver(row, self._checkin_text(row), buttons=True, neuro=bool(row["neuro"]))
            if delivered:
                await asyncio.to_thread(self._mark_sent, row["key"], self.clock())
                sent += 1
            elif not maybe_delivered:  # refused: a message the patient wrote meanwhile did not answer it; retried while fresh
                await asyncio.to_thread(self._unanswer, row["key"])
        reminded = 0
        for row in await asyncio.to_thread(self._claim_reminders, now):
            reminded += (await self._deliver(row, self.texts.reminder, buttons=False))[0]
        missed = await asyncio.to_thread(self._record_missed, now)
        return {"sent": sent, "reminded": reminded, "missed": missed, "not_sent": not_sent}

    async def _deliver(self, row: dict[str, Any], text: str, buttons: bool, neuro: bool = False) -> tuple[bool, bool]:
        """(delivered, maybe delivered): a timeout or a lost connection may have delivered it anyway."""
        keyboard = [(self.texts.button_none, BUTTON_NONE), (self.texts.button_yes, BUTTON_YES)] if buttons else []
        if keyboard and neuro and self.neuro_button:
            keyboard.append((self.neuro_button, NEURO_START))
        try:
            await self.send(int(row["chat_id"]), text, keyboard)
        except Exception as exc:  # Telegram refused or is unreachable: the next round tries again while fresh
            log.warning("checkins.send_failed key=%s type=%s", row["key"].split("@")[-1], type(exc).__name__)
            return False, isinstance(exc, (TimeoutError, OSError, NetworkError)) and not isinstance(exc, (BadRequest, Forbidden))
        return True, True

    def _checkin_text(self, row: dict[str, Any]) -> str:
        therapy = load_knowledge_base().therapy(row["therapy"]) if row.get("therapy") else None
        text = self.texts.checkin.format(day=row["day"], therapy=therapy.name if therapy else "your treatment")
        return text + ("\n\n" + self.texts.neuro_offer if row["neuro"] else "")

    # ------------------------------------------------------------------ claims
    def _enrolled_chats(self) -> list[dict[str, Any]]:
        query = (
            sa.select(CHATS, ENROLMENTS.c.therapy, ENROLMENTS.c.infusion_date, ENROLMENTS.c.timezone, ENROLMENTS.c.dose_dates)
            .select_from(CHATS.join(ENROLMENTS, ENROLMENTS.c.code == CHATS.c.code))
            .where(CHATS.c.opted_out.is_(sa.false()), ENROLMENTS.c.checkins == "active", ENROLMENTS.c.infusion_date.is_not(None))
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def _due(self, chat: dict[str, Any], now: float) -> list[Due]:
        kb = load_knowledge_base()
        therapy = kb.therapy(chat["therapy"]) if chat["therapy"] else None
        kind = therapy.kind if therapy else ""
        try:
            anchors = dose_anchors(chat["infusion_date"], chat["dose_dates"])
            zone = ZoneInfo(chat["timezone"]) if chat["timezone"] else self.default_zone
        except (ValueError, KeyError) as exc:
            log.error("checkins.bad_enrolment type=%s", type(exc).__name__)
            return []
        # nothing from before the chat was linked; a day back, to record what a relay that was down missed
        since = max(chat["linked_at"], now - self.config.stale_after_s - LOOKBACK_S)
        return due_for(self.config, chat["code"], kind, anchors, zone, since, now + 1e-6)

    def _due_rows(self, now: float) -> tuple[list[dict[str, Any]], int]:
        """Check-ins due now that nobody claimed yet (and claims abandoned by a dead owner); ones
        too old to send are recorded `not_sent` here."""
        with self.engine.connect() as conn:
            since = now - self.config.stale_after_s - LOOKBACK_S
            known = {r.key for r in conn.execute(sa.select(CHECKINS.c.key).where(CHECKINS.c.due_at >= since))}
        candidates, not_sent = [], 0
        for chat in self._enrolled_chats():
            for due in self._due(chat, now):
                if due.key in known:
                    continue
                row = {
                    "key": due.key, "code": due.code, "chat_id": chat["chat_id"], "sender_id": chat["sender_id"], "due_at": due.at,
                    "day": due.day, "missed_level": due.missed_level, "neuro": due.neuro, "owner": self.owner, "claimed_at": now,
                    "status": "claimed", "therapy": chat["therapy"],
                }  # fmt: skip
                if now - due.at > self.config.stale_after_s:
                    if self._claim({**row, "status": "not_sent"}):
                        not_sent += 1
                        log.warning("checkins.not_sent day=%d late_by=%.0fmin", due.day, (now - due.at) / 60)
                else:
                    candidates.append(row)
        return candidates + self._take_over_abandoned(now), not_sent

    def _claim(self, row: dict[str, Any]) -> bool:
        """Insert the check-in's row: the primary key lets one claim win. A row taken over from
        a dead owner was claimed by the UPDATE that took it (`taken_over`)."""
        if row.get("taken_over"):
            return True
        values = {k: v for k, v in row.items() if k in CHECKINS.c}
        values["claimed_at"] = self.clock()
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.insert(CHECKINS).values(**values))
        except IntegrityError:
            return False  # another replica (or an earlier round) has it
        return True

    def _take_over_abandoned(self, now: float) -> list[dict[str, Any]]:
        """Claims whose owner died before sending: still fresh, so send them (once: the UPDATE decides)."""
        taken = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(CHECKINS, ENROLMENTS.c.therapy)
                .select_from(CHECKINS.join(ENROLMENTS, ENROLMENTS.c.code == CHECKINS.c.code))
                .where(CHECKINS.c.status == "claimed", CHECKINS.c.claimed_at < now - CLAIM_LEASE_S)
            ).mappings().all()  # fmt: skip
            for row in rows:
                if now - row["due_at"] > self.config.stale_after_s:
                    conn.execute(
                        sa.update(CHECKINS).where(CHECKINS.c.key == row["key"], CHECKINS.c.status == "claimed").values(status="not_sent")
                    )
                    continue
                moved = conn.execute(
                    sa.update(CHECKINS)
                    .where(CHECKINS.c.key == row["key"], CHECKINS.c.status == "claimed", CHECKINS.c.claimed_at == row["claimed_at"])
                    .values(owner=self.owner, claimed_at=now)
                ).rowcount
                if moved:
                    taken.append({**dict(row), "taken_over": True})
        return taken

    def _unanswer(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(CHECKINS)
                .where(CHECKINS.c.key == key, CHECKINS.c.status == "answered", CHECKINS.c.sent_at.is_(None))
                .values(status="claimed", answered_at=None)
            )

    def _mark_sent(self, key: str, at: float) -> None:
        """Sent; a patient who answered between Telegram's receipt and this (a quick tap) stays answered."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(CHECKINS).where(CHECKINS.c.key == key).values(sent_at=at))
            conn.execute(sa.update(CHECKINS).where(CHECKINS.c.key == key, CHECKINS.c.status == "claimed").values(status="sent"))

    def _claim_reminders(self, now: float) -> list[dict[str, Any]]:
        claimed = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(CHECKINS).where(
                    CHECKINS.c.status == "sent", CHECKINS.c.reminded_at.is_(None),
                    CHECKINS.c.due_at <= now - self.config.remind_after_s, CHECKINS.c.due_at > now - self.config.missed_after_s,
                )
            ).mappings().all()  # fmt: skip
            for row in rows:
                if conn.execute(
                    sa.update(CHECKINS).where(CHECKINS.c.key == row["key"], CHECKINS.c.reminded_at.is_(None)).values(reminded_at=now)
                ).rowcount:
                    claimed.append(dict(row))
        return claimed

    def _record_missed(self, now: float) -> int:
        missed = 0
        with self.engine.begin() as conn:
            rows = conn.execute(
                sa.select(CHECKINS).where(CHECKINS.c.status == "sent", CHECKINS.c.due_at <= now - self.config.missed_after_s)
            ).mappings().all()  # fmt: skip
            for row in rows:
                if not conn.execute(
                    sa.update(CHECKINS)
                    .where(CHECKINS.c.key == row["key"], CHECKINS.c.status == "sent")
                    .values(status="missed", missed_at=now)
                ).rowcount:
                    continue  # answered or recorded by another replica meanwhile
                local = row["key"].split("@")[-1].replace("T", " ")
                reason = (
                    f"no response to the check-in of {local} (day {row['day']}) → no_response → {row['missed_level']} (check-in schedule)"
                )
                worklist.open_item(conn, self.tracking, row["sender_id"], row["missed_level"], now, reason)
                missed += 1
        return missed

    # ------------------------------------------------------------------ from the relay
    def answered(self, chat_id: int, at: float | None = None) -> int:
        """The patient (or a caregiver) wrote: every open check-in of this chat is answered."""
        with self.engine.begin() as conn:
            return _answer_open(conn, chat_id, at or self.clock())

    def asked(self, chat_id: int, at: float | None = None) -> dict[str, Any] | None:
        """The chat's latest check-in sent within `question_open_min`, whatever its status: a yes or
        no now may answer its question ({key, sent_at}); None if there is none."""
        at = at or self.clock()
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(CHECKINS.c.key, CHECKINS.c.sent_at)
                .where(CHECKINS.c.chat_id == chat_id, CHECKINS.c.sent_at >= at - self.config.question_open_s)
                .order_by(CHECKINS.c.sent_at.desc())
                .limit(1)
            ).first()  # fmt: skip
        return {"key": row.key, "sent_at": row.sent_at} if row else None


def _answer_open(conn: sa.engine.Connection, chat_id: int, at: float) -> int:
    """Every check-in of this chat sent (or being sent: the patient may tap before the relay has
    recorded the send) before `at` and still waiting counts as answered."""
    waiting = sa.or_(
        sa.and_(CHECKINS.c.status == "sent", CHECKINS.c.sent_at <= at),
        sa.and_(CHECKINS.c.status == "claimed", CHECKINS.c.claimed_at <= at),
    )
    return int(
        conn.execute(sa.update(CHECKINS).where(CHECKINS.c.chat_id == chat_id, waiting).values(status="answered", answered_at=at)).rowcount
    )


def reported_emergency(engine: Engine, tracking: worklist.Tracking, chat_id: int, at: float) -> str | None:
    """The "Yes, one of these" button: the open check-in is answered, and the clinic gets an
    emergency item at once, even while Rasa (whose triage answers the patient) is away.
    Returns the sender id, if linked."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(CHATS.c.sender_id).where(CHATS.c.chat_id == chat_id)).first()
        if row is None:
            return None
        _answer_open(conn, chat_id, at)
        reason = "check-in: an emergency sign reported with the button → emergency_sign → emergency (check-in answer)"
        worklist.open_item(conn, tracking, row.sender_id, "emergency", at, reason)
        return str(row.sender_id)


def link_chat(engine: Engine, code: str, chat_id: int, sender_id: str, now: float | None = None) -> bool:
    """`/start <code>`: this chat answers for that enrolment from now on (False: no such code)."""
    code = code.strip().upper()[:64]
    now = now or time.time()
    with engine.begin() as conn:
        if conn.execute(sa.select(ENROLMENTS.c.code).where(ENROLMENTS.c.code == code)).first() is None:
            return False
        if conn.execute(sa.update(CHATS).where(CHATS.c.code == code).values(chat_id=chat_id, sender_id=sender_id, linked_at=now)).rowcount:
            return True
        conn.execute(sa.insert(CHATS).values(code=code, chat_id=chat_id, sender_id=sender_id, linked_at=now, opted_out=False))
    return True


def set_opted_out(engine: Engine, chat_id: int, opted_out: bool) -> int:
    """The patient's `/checkins off|on`; returns how many enrolments of this chat changed."""
    with engine.begin() as conn:
        return int(conn.execute(sa.update(CHATS).where(CHATS.c.chat_id == chat_id).values(opted_out=opted_out)).rowcount)

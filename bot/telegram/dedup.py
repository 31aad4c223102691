"""Each patient message handled once, however many relay instances receive it, and never dropped
unanswered.

Telegram re-sends an update when its webhook request failed or timed out, and a restarted
poller is sent again what it had fetched but not yet confirmed; behind a load balancer the
copy can reach another relay instance. Claims are keyed on what identifies a message for good:
the chat's pseudonym with the Telegram message id (plus the edit time for an edit), or the
callback query id for a button tap. Update ids are not used: Telegram restarts them at a
random value after a week without updates, and a claim keyed on them ate new messages.

A claim row records when the message was claimed and when its patient got an answer. A copy
of an answered message is dropped. A copy of a message that was claimed but never answered
(its relay was killed, or it is still working on it elsewhere) waits until the original is
answered or `TAKEOVER_AFTER` has passed, then takes the claim over and answers it itself.

Claims live in the shared database (`DATABASE_URL`, the tracker store's). If the database
cannot be reached the message is handled anyway: a duplicate is better than a lost message.
Claims older than `KEEP_SECONDS` are pruned by the relay's hourly housekeeping, whatever the
traffic (Telegram keeps an unconfirmed update for 24 hours).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.db import create_db_engine

log = logging.getLogger("bot.telegram")
KEEP_SECONDS = 2 * 24 * 3600
PRUNE_INTERVAL = 3600.0  # seconds between two prunes, on a timer (not per N claims)
KEY_CHARS = 200

metadata = sa.MetaData()
MESSAGES = sa.Table(
    "relay_messages",
    metadata,
    sa.Column("bot_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("message_key", sa.String(KEY_CHARS), primary_key=True),
    sa.Column("claimed_at", sa.Float, nullable=False, index=True),
    sa.Column("answered_at", sa.Float, nullable=True),
)


class Verdict(enum.Enum):
    FIRST = "first"  # nobody had it: handle it
    ANSWERED = "answered"  # a copy of a message whose patient already got an answer: drop it
    PENDING = "pending"  # claimed, not answered yet: wait, then take over


@dataclass(frozen=True)
class Claim:
    verdict: Verdict
    claimed_at: float = 0.0


class MessageClaims:
    """Claims patient messages in the shared database (see module doc)."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = create_db_engine(database_url)
        self._ready = False

    def _ensure_table(self) -> None:
        if not self._ready:
            metadata.create_all(self.engine, checkfirst=True)
            self._ready = True

    @staticmethod
    def _where(bot_id: int, key: str) -> sa.ColumnElement[bool]:
        return sa.and_(MESSAGES.c.bot_id == bot_id, MESSAGES.c.message_key == key[:KEY_CHARS])

    def claim(self, bot_id: int, key: str, now: float | None = None) -> Claim:
        """FIRST if this instance is the first to claim the message (or the database is down)."""
        try:
            self._ensure_table()
            try:
                with self.engine.begin() as c:
                    c.execute(MESSAGES.insert().values(bot_id=bot_id, message_key=key[:KEY_CHARS], claimed_at=now or time.time()))
                return Claim(Verdict.FIRST)
            except IntegrityError:
                pass
            with self.engine.begin() as c:
                row = c.execute(sa.select(MESSAGES.c.claimed_at, MESSAGES.c.answered_at).where(self._where(bot_id, key))).first()
            if row is None:  # pruned in between: nobody holds it now
                return self.claim(bot_id, key, now)
            return Claim(Verdict.ANSWERED if row.answered_at is not None else Verdict.PENDING, float(row.claimed_at))
        except SQLAlchemyError as exc:
            log.warning("relay.dedup.unavailable type=%s (handling the message anyway)", type(exc).__name__)
            return Claim(Verdict.FIRST)

    def is_answered(self, bot_id: int, key: str) -> bool:
        try:
            with self.engine.begin() as c:
                row = c.execute(sa.select(MESSAGES.c.answered_at).where(self._where(bot_id, key))).first()
        except SQLAlchemyError:
            return False
        return row is not None and row.answered_at is not None

    def take_over(self, bot_id: int, key: str, seen_claimed_at: float, now: float | None = None) -> bool:
        """Claim an unanswered message whose claim is `seen_claimed_at`; False if another copy
        took it over first or it got its answer meanwhile. Database down: True (answer it)."""
        try:
            with self.engine.begin() as c:
                result = c.execute(
                    MESSAGES.update()
                    .where(self._where(bot_id, key), MESSAGES.c.answered_at.is_(None), MESSAGES.c.claimed_at == seen_claimed_at)
                    .values(claimed_at=now or time.time())
                )
            return bool(result.rowcount)
        except SQLAlchemyError:
            return True

    def answered(self, bot_id: int, key: str, now: float | None = None) -> None:
        """Record that the message's patient got an answer (Rasa's, or the fail-safe)."""
        try:
            self._ensure_table()
            with self.engine.begin() as c:
                c.execute(MESSAGES.update().where(self._where(bot_id, key)).values(answered_at=now or time.time()))
        except SQLAlchemyError as exc:
            log.warning("relay.dedup.unavailable type=%s (answer not recorded)", type(exc).__name__)

    def prune(self, now: float | None = None) -> int:
        self._ensure_table()
        cutoff = (now or time.time()) - KEEP_SECONDS
        with self.engine.begin() as c:
            return int(c.execute(MESSAGES.delete().where(MESSAGES.c.claimed_at < cutoff)).rowcount or 0)


class RelayClaims:
    """`MessageClaims` for one bot, off the event loop. The relay calls it inside the chat's
    ordered section, so waiting for the database never reorders a chat's messages."""

    def __init__(self, claims: MessageClaims, bot_id: int, takeover_after: float, poll: float = 0.25) -> None:
        self.claims = claims
        self.bot_id = bot_id
        self.takeover_after = takeover_after
        self.poll = poll

    async def check(self, key: str) -> Claim:
        claim = await asyncio.to_thread(self.claims.claim, self.bot_id, key)
        if claim.verdict is Verdict.ANSWERED:
            log.info("relay.message.duplicate answered=true")
        return claim

    async def wait_or_take_over(self, key: str, claimed_at: float) -> bool:
        """For a copy of a claimed, unanswered message: the original is in flight (on another
        instance) or its relay was killed. Give it until `takeover_after` from its claim; True
        when this instance must now answer it, False when the original got its answer."""
        while time.time() < claimed_at + self.takeover_after:
            await asyncio.sleep(self.poll)
            if await asyncio.to_thread(self.claims.is_answered, self.bot_id, key):
                log.info("relay.message.duplicate answered=true waited=true")
                return False
        taken = await asyncio.to_thread(self.claims.take_over, self.bot_id, key, claimed_at)
        log.warning("relay.message.unanswered_copy taken_over=%s", taken)
        return taken

    async def answered(self, key: str) -> None:
        await asyncio.to_thread(self.claims.answered, self.bot_id, key)

    async def prune_forever(self, interval: float = PRUNE_INTERVAL) -> None:
        while True:
            try:
                pruned = await asyncio.to_thread(self.claims.prune)
                log.info("relay.dedup.pruned claims=%d", pruned)
            except Exception as exc:  # housekeeping must survive a database outage
                log.warning("relay.dedup.prune_failed type=%s", type(exc).__name__)
            await asyncio.sleep(interval)

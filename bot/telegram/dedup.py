"""Each patient message handled once, however many relay instances receive it, and never dropped
before it is safe.

Telegram re-sends an update when its webhook request failed or timed out, and a restarted
poller is sent again what it had fetched but not yet confirmed; behind a load balancer the
copy can reach another relay instance, and a killed relay replays its inbox (inbox.py). Claims
are keyed on what identifies a message for good: the chat's pseudonym with the Telegram message
id (plus the edit time for an edit), or the callback query id for a button tap. Update ids are
not used: Telegram restarts them at a random value after a week without updates, and a claim
keyed on them ate new messages.

A claim row records who holds it (`owner`, one id per relay process), a heartbeat
(`claimed_at`, renewed every `HEARTBEAT_S` while the holder works on it), when the patient got
a reply (`answered_at`: Rasa's answer or the fail-safe) and when the message became safe
(`done_at`: stored by Rasa or parked in the holder's outbox). A copy of a done message is
dropped. A copy of a message that is not done waits: while the holder's heartbeat goes on, the
holder is alive and will finish it; once the heartbeat has stood still for `TAKEOVER_AFTER_S`
(the holder was killed, even after it had sent the fail-safe), the copy takes the claim over
and finishes the message itself. Time is measured on the waiting side only, so clocks of
different hosts need not agree.

Claims live in the shared database (`DATABASE_URL`, the tracker store's). If the database
cannot be reached or does not answer within `DB_TIMEOUT_S`, the message is handled anyway: a
duplicate is better than a lost message. Claims older than `KEEP_SECONDS` are pruned by an
hourly timer, whatever the traffic (Telegram keeps an unconfirmed update for 24 hours).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.db import create_db_engine

log = logging.getLogger("bot.telegram")
KEEP_SECONDS = 2 * 24 * 3600
PRUNE_INTERVAL = 3600.0  # seconds between two prunes, on a timer (not per N claims)
HEARTBEAT_S = 2.0
TAKEOVER_AFTER_S = 10.0  # a heartbeat standing still this long: its holder is gone
DB_TIMEOUT_S = 5.0  # a claim the database does not answer in time: handle the message anyway
KEY_CHARS = 200

metadata = sa.MetaData()
MESSAGES = sa.Table(
    "relay_messages",
    metadata,
    sa.Column("bot_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("message_key", sa.String(KEY_CHARS), primary_key=True),
    sa.Column("owner", sa.String(32), nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=False, index=True),
    sa.Column("answered_at", sa.Float, nullable=True),
    sa.Column("done_at", sa.Float, nullable=True),
)


class Verdict(enum.Enum):
    FIRST = "first"  # nobody had it: handle it
    DONE = "done"  # a copy of a message already stored or parked: drop it
    PENDING = "pending"  # held, not done yet: wait for it, or take it over


@dataclass(frozen=True)
class Claim:
    verdict: Verdict
    claimed_at: float = 0.0
    answered: bool = False
    owner: str = ""


class MessageClaims:
    """Claims patient messages in the shared database (see module doc). Blocking calls."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = create_db_engine(database_url)
        self._ready = False

    def _ensure_table(self) -> None:
        if not self._ready:
            metadata.create_all(self.engine, checkfirst=True)
            self._ready = True

    @staticmethod
    def _where(bot_id: int, key: str) -> Any:
        return sa.and_(MESSAGES.c.bot_id == bot_id, MESSAGES.c.message_key == key[:KEY_CHARS])

    def claim(self, bot_id: int, key: str, owner: str, now: float | None = None) -> Claim:
        """FIRST if this owner is the first to claim the message (or the database is down)."""
        try:
            self._ensure_table()
            try:
                row = {"bot_id": bot_id, "message_key": key[:KEY_CHARS], "owner": owner, "claimed_at": now or time.time()}
                with self.engine.begin() as c:
                    c.execute(MESSAGES.insert().values(row))
                return Claim(Verdict.FIRST)
            except IntegrityError:
                pass
            claim = self.state(bot_id, key)
            return claim if claim is not None else self.claim(bot_id, key, owner, now)  # pruned in between
        except SQLAlchemyError as exc:
            log.warning("relay.dedup.unavailable type=%s (handling the message anyway)", type(exc).__name__)
            return Claim(Verdict.FIRST)

    def state(self, bot_id: int, key: str) -> Claim | None:
        with self.engine.begin() as c:
            row = c.execute(
                sa.select(MESSAGES.c.claimed_at, MESSAGES.c.answered_at, MESSAGES.c.done_at, MESSAGES.c.owner).where(
                    self._where(bot_id, key)
                )
            ).first()
        if row is None:
            return None
        verdict = Verdict.DONE if row.done_at is not None else Verdict.PENDING
        return Claim(verdict, float(row.claimed_at), row.answered_at is not None, str(row.owner))

    def heartbeat(self, bot_id: int, key: str, owner: str, now: float | None = None) -> bool:
        """Renew the holder's claim; False if it is no longer this owner's (taken over) or done."""
        with self.engine.begin() as c:
            result = c.execute(
                MESSAGES.update()
                .where(self._where(bot_id, key), MESSAGES.c.owner == owner, MESSAGES.c.done_at.is_(None))
                .values(claimed_at=now or time.time())
            )
        return bool(result.rowcount)

    def take_over(self, bot_id: int, key: str, seen_claimed_at: float, owner: str, now: float | None = None) -> bool:
        """Make `owner` the holder of a message whose heartbeat still reads `seen_claimed_at`;
        False if it moved (the holder lives, or another copy took it over) or it is done."""
        with self.engine.begin() as c:
            result = c.execute(
                MESSAGES.update()
                .where(self._where(bot_id, key), MESSAGES.c.done_at.is_(None), MESSAGES.c.claimed_at == seen_claimed_at)
                .values(owner=owner, claimed_at=now or time.time())
            )
        return bool(result.rowcount)

    def mark(self, bot_id: int, key: str, *columns: str, now: float | None = None) -> None:
        """Set `answered_at` (the patient got a reply) and/or `done_at` (the message is safe), in
        one UPDATE; a time already set is kept."""
        try:
            self._ensure_table()
            stamp = now or time.time()
            with self.engine.begin() as c:
                c.execute(
                    MESSAGES.update()
                    .where(self._where(bot_id, key))
                    .values({col: sa.func.coalesce(MESSAGES.c[col], stamp) for col in columns})
                )
        except SQLAlchemyError as exc:
            log.warning("relay.dedup.unavailable type=%s (%s not recorded)", type(exc).__name__, ", ".join(columns))

    def prune(self, now: float | None = None) -> int:
        self._ensure_table()
        cutoff = (now or time.time()) - KEEP_SECONDS
        with self.engine.begin() as c:
            return int(c.execute(MESSAGES.delete().where(MESSAGES.c.claimed_at < cutoff)).rowcount or 0)


class RelayClaims:
    """`MessageClaims` for one relay process and bot, off the event loop on threads of its own (a
    database that hangs must not hold up the inbox or the outbox), each call bounded by
    `DB_TIMEOUT_S`. The relay calls it inside the chat's ordered section, so waiting for the
    database never reorders a chat's messages."""

    def __init__(
        self,
        claims: MessageClaims,
        bot_id: int,
        takeover_after: float = TAKEOVER_AFTER_S,
        poll: float = 0.25,
        heartbeat: float = HEARTBEAT_S,
        owner: str | None = None,
    ) -> None:
        self.claims = claims
        self.bot_id = bot_id
        # The relay's lasting id (kept in its inbox file): a claim of its own from before this
        # start was left by its previous life, which is dead, so it takes it over at once.
        self.owner = owner or uuid.uuid4().hex
        self.started = time.time()
        self.takeover_after, self.poll, self.heartbeat = takeover_after, poll, heartbeat
        self._threads = ThreadPoolExecutor(max_workers=8, thread_name_prefix="relay-claims")

    async def _call(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await asyncio.wait_for(loop.run_in_executor(self._threads, fn, *args), DB_TIMEOUT_S)

    async def check(self, key: str) -> Claim:
        try:
            claim = await self._call(self.claims.claim, self.bot_id, key, self.owner)
        except TimeoutError:
            log.warning("relay.dedup.slow (handling the message anyway)")
            return Claim(Verdict.FIRST)
        if claim.verdict is Verdict.DONE:
            log.info("relay.message.duplicate done=true")
        return claim

    async def wait_or_take_over(self, key: str, claim: Claim) -> Claim | None:
        """For a copy of a message held elsewhere and not done: wait while the holder's heartbeat
        moves; None once the message is done (drop the copy), or the claim as it stood when this
        relay took it over (its `answered` says whether the patient already had a reply)."""
        if claim.owner == self.owner and claim.claimed_at < self.started:
            try:
                if await self._call(self.claims.take_over, self.bot_id, key, claim.claimed_at, self.owner):
                    log.warning("relay.message.taken_over answered=%s previous_run=true", claim.answered)
                    return claim
            except (TimeoutError, SQLAlchemyError):
                return claim
        seen, deadline = claim.claimed_at, time.monotonic() + self.takeover_after
        while True:
            await asyncio.sleep(self.poll)
            try:
                claim = await self._call(self.claims.state, self.bot_id, key)
            except (TimeoutError, SQLAlchemyError) as exc:
                log.warning("relay.dedup.unavailable type=%s (taking the message over)", type(exc).__name__)
                return Claim(Verdict.PENDING)
            if claim is None or claim.verdict is Verdict.DONE:
                log.info("relay.message.duplicate done=true waited=true")
                return None
            if claim.claimed_at != seen:  # the holder (or a copy that took over) is alive
                seen, deadline = claim.claimed_at, time.monotonic() + self.takeover_after
                continue
            if time.monotonic() >= deadline:
                try:
                    taken = await self._call(self.claims.take_over, self.bot_id, key, seen, self.owner)
                except (TimeoutError, SQLAlchemyError):
                    taken = True  # cannot tell: answer it (a duplicate beats a loss)
                if taken:
                    log.warning("relay.message.taken_over answered=%s", claim.answered)
                    return claim

    async def keep_alive(self, key: str) -> None:
        """The holder's heartbeat, until cancelled (the message is done) or taken over."""
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                if not await self._call(self.claims.heartbeat, self.bot_id, key, self.owner):
                    return
            except (TimeoutError, SQLAlchemyError) as exc:
                log.warning("relay.dedup.heartbeat_failed type=%s", type(exc).__name__)

    async def mark(self, key: str, *columns: str) -> None:
        """`MessageClaims.mark` for this relay's bot: `answered_at`, `done_at` or both at once."""
        try:
            await self._call(self.claims.mark, self.bot_id, key, *columns)
        except TimeoutError:
            log.warning("relay.dedup.slow (%s not recorded)", ", ".join(columns))

    async def prune_forever(self, interval: float = PRUNE_INTERVAL) -> None:
        while True:
            try:
                pruned = await asyncio.to_thread(self.claims.prune)
                log.info("relay.dedup.pruned claims=%d", pruned)
            except Exception as exc:  # housekeeping must survive a database outage
                log.warning("relay.dedup.prune_failed type=%s", type(exc).__name__)
            await asyncio.sleep(interval)

"""Each Telegram update handled once, however many relay instances receive it.

Telegram re-sends an update when its webhook request failed or timed out, and a restarted
poller is sent again what it had fetched but not yet confirmed; behind a load balancer the
copy can reach another relay instance. The first instance to handle an `update_id` claims it with
an INSERT into `relay_updates` in the shared database (`DATABASE_URL`, the tracker store's);
a second INSERT of the same id fails on the primary key and that copy is dropped. If the
database cannot be reached the update is handled anyway: a duplicate is better than a lost
message. Claims older than `KEEP_SECONDS` are pruned (Telegram keeps updates for 24 hours).
"""

from __future__ import annotations

import asyncio
import logging
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from bot.db import create_db_engine

log = logging.getLogger("bot.telegram")
KEEP_SECONDS = 2 * 24 * 3600
PRUNE_EVERY = 1000  # claims between two prunes

metadata = sa.MetaData()
UPDATES = sa.Table(
    "relay_updates",
    metadata,
    sa.Column("bot_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("update_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("claimed_at", sa.Float, nullable=False, index=True),
)


class UpdateDeduplicator:
    """Claims update ids in the shared database (see module doc)."""

    def __init__(self, database_url: str) -> None:
        self.engine: Engine = create_db_engine(database_url)
        self._ready = False
        self._claims = 0

    def claim(self, bot_id: int, update_id: int) -> bool:
        """True if this instance is the first to claim the update (or the database is down)."""
        try:
            if not self._ready:
                metadata.create_all(self.engine, checkfirst=True)
                self._ready = True
            with self.engine.begin() as c:
                c.execute(UPDATES.insert().values(bot_id=bot_id, update_id=update_id, claimed_at=time.time()))
            self._claims += 1
            if self._claims % PRUNE_EVERY == 0:
                self.prune()
            return True
        except IntegrityError:
            return False
        except SQLAlchemyError as exc:
            log.warning("relay.dedup.unavailable type=%s (handling the update anyway)", type(exc).__name__)
            return True

    def prune(self, now: float | None = None) -> int:
        cutoff = (now or time.time()) - KEEP_SECONDS
        with self.engine.begin() as c:
            return int(c.execute(UPDATES.delete().where(UPDATES.c.claimed_at < cutoff)).rowcount or 0)

    async def aclaim(self, bot_id: int, update_id: int) -> bool:
        """`claim` off the event loop. The relay calls it inside the chat's ordered section, so
        waiting for the database never reorders a chat's messages."""
        first = await asyncio.to_thread(self.claim, bot_id, update_id)
        if not first:
            log.info("relay.update.duplicate update_id=%d", update_id)
        return first

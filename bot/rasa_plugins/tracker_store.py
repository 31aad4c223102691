"""Rasa's SQLTrackerStore configured from one `DATABASE_URL` (SQLite default, PostgreSQL works).

Rasa's own config wants dialect/host/db/... keys; operators think in one URL. This subclass
parses the URL with SQLAlchemy and hands the parts to the stock store, so every conversation
is persisted and survives a restart of the Rasa server.
"""

from __future__ import annotations

import itertools
import json
import logging
import pickle
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import FailSafeTrackerStore, SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy import bindparam, func, insert, or_, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import sessionmaker

from bot.clinic.forget import forget_clinic_rows
from bot.clinic.schema import rewind_events_mark
from bot.db import create_db_engine, database_url, scrub_deleted
from bot.fastjson import dumps

log = logging.getLogger(__name__)
_SESSION_VIEW = "_crs_session_view"  # marks trackers holding the latest session only


def _is_session_view(tracker: DialogueStateTracker) -> bool:
    """Whether `tracker` holds exactly what `retrieve` reads back: the latest session only.

    Not so for a full-history tracker (HTTP API), or once a new session starts inside a tracker
    (the old session's events precede the new `session_started`): those are read back instead."""
    if not getattr(tracker, _SESSION_VIEW, False):
        return False
    starts = [i for i, event in enumerate(tracker.events) if type(event) is SessionStarted]
    return starts in ([], [0])


@dataclass
class _Cached:
    blob: bytes  # the tracker as saved, pickled: one object the garbage collector need not walk
    events: int  # len(tracker.events) when it was stored
    stamp: tuple[Any, int]  # (max id, row count) of the sender's rows right after that


class ConfiguredSQLTrackerStore(SQLTrackerStore):
    """SQLTrackerStore whose connection comes from $DATABASE_URL, with a tracker cache.

    Cache: rebuilding a tracker from its stored events on every message (JSON, event objects,
    replaying each event) grew with the conversation and was ~8 % of server time; the stored
    tracker is kept in memory after each save (LRU, `cache_size` in endpoints.yml, 0 = off) and
    reused only while the database still holds exactly the rows it was saved with — the sender's
    highest event id and row count, one indexed query. Another replica writing to the same
    conversation, `/forget` or the retention job change that stamp, so the tracker is read again.

    The cache keeps each tracker pickled (`pickle.loads` of a tracker takes ~0.1 ms): kept as
    objects, a thousand trackers were ~270,000 objects (events, slots, parse dicts) that every
    full garbage collection of the Rasa server walked, 120–150 ms each time and more on a busy
    day (`make soak` with CRS_GC_DEBUG=1). A retrieve hands out a fresh copy, so a tracker changed
    in memory but not saved (an error mid-message) never reaches the cache.
    """

    def __init__(
        self,
        domain: Domain | None = None,
        host: str | None = None,
        event_broker: EventBroker | None = None,
        cache_size: int = 1000,
        **kwargs: Any,
    ) -> None:
        url = make_url(database_url())
        if url.drivername.startswith("sqlite") and url.database:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        for key in ("dialect", "port", "db", "username", "password", "query", "login_db"):
            kwargs.pop(key, None)
        super().__init__(
            domain=domain,
            dialect=url.drivername,
            host=url.host,
            port=url.port,
            db=url.database or "",
            username=url.username,
            password=url.password,
            event_broker=event_broker,
            query=dict(url.query) or None,
            **kwargs,
        )
        if url.drivername.startswith("sqlite"):
            self._use_pooled_sqlite_engine()
        # an event broker is fed by comparing the stored tracker with the new one: no cache then
        self._cache_size = 0 if event_broker else int(cache_size)
        self._cache: OrderedDict[str, _Cached] = OrderedDict()
        # the copy a request holds of each cached conversation; weak, so a copy read and never saved
        # (an API read, an error mid-message) is not kept alive here
        self._lent: weakref.WeakValueDictionary[str, DialogueStateTracker] = weakref.WeakValueDictionary()
        self._build_statements()

    def _use_pooled_sqlite_engine(self) -> None:
        """Rasa opens SQLite with SQLAlchemy's NullPool: a new connection for every read and
        write of every message. Use the project's pooled WAL engine instead (see `create_db_engine`)."""
        url = self.engine.url
        self.engine.dispose()
        self.engine: Engine = create_db_engine(str(url))
        self.sessionmaker = sessionmaker(bind=self.engine)

    # Rasa's stock store reads and writes events through ORM objects and rebuilds the same ORM
    # query three times per message; the profile put ~30 % of the Rasa server's time there.
    # The statements below are the same SQL conditions in SQLAlchemy Core with bound parameters,
    # built once (so SQLAlchemy's compiled-statement cache key is computed once too) and run on
    # plain connections.

    def _build_statements(self) -> None:
        events = self.SQLEvent.__table__
        sender = bindparam("sender_id")
        session_start = (
            select(func.max(events.c.timestamp))
            .where(events.c.sender_id == sender, events.c.type_name == SessionStarted.type_name)
            .scalar_subquery()
        )  # events of the sender from its latest `session_started` on
        current = (events.c.sender_id == sender) & or_(events.c.timestamp >= session_start, session_start.is_(None))
        self._select_current = select(events.c.data).where(current).order_by(events.c.id)
        self._select_all = select(events.c.data).where(events.c.sender_id == sender).order_by(events.c.id)
        self._count_current = select(func.count()).select_from(events).where(current)
        self._select_stamp = select(func.max(events.c.id), func.count()).where(events.c.sender_id == sender)
        self._insert = insert(events)

    def _stamp(self, connection: Connection, sender_id: str) -> tuple[Any, int]:
        row = connection.execute(self._select_stamp, {"sender_id": sender_id}).one()
        return row[0], int(row[1])

    def _cached(self, sender_id: str) -> DialogueStateTracker | None:
        """The cached tracker of `sender_id` if the database still holds what it was saved as."""
        entry = self._cache.get(sender_id)
        if entry is None:
            return None
        with self.engine.connect() as connection:
            if self._stamp(connection, sender_id) == entry.stamp:
                self._cache.move_to_end(sender_id)
                tracker = pickle.loads(entry.blob)  # noqa: S301 - bytes this process pickled itself
                self._lent[sender_id] = tracker
                return tracker
        del self._cache[sender_id]
        self._lent.pop(sender_id, None)
        return None

    def init_tracker(self, sender_id: str) -> DialogueStateTracker:
        tracker = super().init_tracker(sender_id)
        setattr(tracker, _SESSION_VIEW, True)  # a new conversation is its own latest session
        return tracker

    async def _retrieve(self, sender_id: str, fetch_events_from_all_sessions: bool) -> DialogueStateTracker | None:
        if not fetch_events_from_all_sessions:
            cached = self._cached(sender_id)
            if cached is not None:
                return cached
        statement = self._select_all if fetch_events_from_all_sessions else self._select_current
        with self.engine.connect() as connection:
            rows = connection.execute(statement, {"sender_id": sender_id}).scalars().all()
        if not self.domain or not rows:
            return None
        tracker = DialogueStateTracker.from_dict(sender_id, [json.loads(data) for data in rows], self.domain.slots)
        if not fetch_events_from_all_sessions:
            setattr(tracker, _SESSION_VIEW, True)
        return tracker

    def _additional_events(self, connection: Connection, tracker: DialogueStateTracker) -> Iterator:
        entry = self._cache.get(tracker.sender_id)
        if entry is not None and self._lent.get(tracker.sender_id) is tracker:
            stored = entry.events  # _cached() checked the stamp when this request read it
        else:
            stored = connection.execute(self._count_current, {"sender_id": tracker.sender_id}).scalar_one()
        return itertools.islice(tracker.events, stored, len(tracker.events))

    def _remember(self, tracker: DialogueStateTracker, stamp: tuple[Any, int]) -> None:
        sender_id = tracker.sender_id
        self._lent.pop(sender_id, None)
        if not self._cache_size or not _is_session_view(tracker):
            self._cache.pop(sender_id, None)  # read it back from the database next time
            return
        self._cache[sender_id] = _Cached(pickle.dumps(tracker, protocol=pickle.HIGHEST_PROTOCOL), len(tracker.events), stamp)
        self._cache.move_to_end(sender_id)
        while len(self._cache) > self._cache_size:
            evicted, _ = self._cache.popitem(last=False)
            self._lent.pop(evicted, None)

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Store the events not stored yet, in one multi-row INSERT and one commit."""
        await self.stream_events(tracker)
        with self.engine.begin() as connection:  # one transaction, committed on leaving
            rows = []
            for stored_event in self._additional_events(connection, tracker):
                data = stored_event.as_dict()
                rows.append(
                    {
                        "sender_id": tracker.sender_id,
                        "type_name": stored_event.type_name,
                        "timestamp": data.get("timestamp"),
                        "intent_name": data.get("parse_data", {}).get("intent", {}).get("name"),
                        "action_name": data.get("name"),
                        "data": dumps(data),
                    }
                )
            if rows:
                connection.execute(self._insert, rows)
            stamp = self._stamp(connection, tracker.sender_id) if self._cache_size else (None, 0)
        self._remember(tracker, stamp)

    async def delete(self, sender_id: str) -> int:
        """Delete every stored event of one conversation (all sessions); returns how many.

        Used by the patient's `/forget`; the caller holds the conversation lock."""
        events = self.SQLEvent.__table__
        self._cache.pop(sender_id, None)
        self._lent.pop(sender_id, None)
        with self.session_scope() as session:
            deleted = session.execute(events.delete().where(events.c.sender_id == sender_id)).rowcount
            rewind_events_mark(session.connection())  # same transaction: see its docstring
            session.commit()
        forget_clinic_rows(self.engine, sender_id)
        if not scrub_deleted(self.engine):
            log.warning("forgotten conversation: the database log could not be truncated yet (a reader was active)")
        return int(deleted or 0)


# ------------------------------------------------------------------ database errors reach the channel
_HINTS = (
    ("disk is full", "the disk holding the tracker database is full"),
    ("readonly", "the tracker database is read-only"),
    ("read-only", "the tracker database is read-only"),
    ("locked", "the tracker database stayed locked longer than the busy timeout"),
    ("could not connect", "the tracker database is unreachable"),
    ("connection refused", "the tracker database is unreachable"),
    ("server closed the connection", "the tracker database connection was lost"),
    ("unable to open", "the tracker database file cannot be opened"),
    ("disk i/o error", "the disk holding the tracker database failed"),
)


def describe_store_error(error: BaseException) -> str:
    """What an operator should look at, then the driver's own words."""
    words = str(error).lower()
    hint = next((h for key, h in _HINTS if key in words), "the tracker database failed")
    return f"{hint}: {str(error).splitlines()[0][:300]}"


def _strict(name: str) -> Any:
    stock = getattr(FailSafeTrackerStore, name)

    async def strict(self: FailSafeTrackerStore, *args: Any) -> Any:
        if not isinstance(self._tracker_store, ConfiguredSQLTrackerStore):
            return await stock(self, *args)
        try:
            return await getattr(self._tracker_store, name)(*args)
        except Exception as error:
            log.error(
                "tracker store %s failed, the message is refused so that its channel retries it: %s",
                name,
                describe_store_error(error),
            )
            raise

    strict.__doc__ = f"`FailSafeTrackerStore.{name}`, raising for our store instead of falling back to memory."
    return strict


def fail_loudly() -> None:
    """Rasa wraps every tracker store in FailSafeTrackerStore, which on a database error answers
    from an empty in-memory store: the patient's history is ignored for that message (their
    earlier emergency forgotten) and the message is never stored. For our store the error goes
    to the channel instead; the Telegram relay then gives the fail-safe reply, keeps the
    message and hands it over again, in order, once the database is back. Idempotent."""
    if getattr(FailSafeTrackerStore, "_crs_strict", False):
        return
    for name in ("retrieve", "retrieve_full_tracker", "save", "keys"):
        setattr(FailSafeTrackerStore, name, _strict(name))
    FailSafeTrackerStore._crs_strict = True


fail_loudly()

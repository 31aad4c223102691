"""Rasa's SQLTrackerStore configured from one `DATABASE_URL` (SQLite default, PostgreSQL works).

Rasa's own config wants dialect/host/db/... keys; operators think in one URL. This subclass
parses the URL with SQLAlchemy and hands the parts to the stock store, so every conversation
is persisted and survives a restart of the Rasa server.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import SessionStarted
from rasa.shared.core.trackers import DialogueStateTracker
from sqlalchemy import func, insert, or_, select
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import sessionmaker

from bot.clinic.forget import forget_clinic_rows
from bot.db import create_db_engine, database_url


class ConfiguredSQLTrackerStore(SQLTrackerStore):
    """SQLTrackerStore whose connection comes from $DATABASE_URL."""

    def __init__(
        self,
        domain: Domain | None = None,
        host: str | None = None,
        event_broker: EventBroker | None = None,
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

    def _use_pooled_sqlite_engine(self) -> None:
        """Rasa opens SQLite with SQLAlchemy's NullPool: a new connection for every read and
        write of every message. Use the project's pooled WAL engine instead (see `create_db_engine`)."""
        url = self.engine.url
        self.engine.dispose()
        self.engine = create_db_engine(str(url))
        self.sessionmaker = sessionmaker(bind=self.engine)

    # Rasa's stock store reads and writes events through ORM objects and rebuilds the same ORM
    # query three times per message; the profile put ~30 % of the Rasa server's time there.
    # The statements below are the same SQL conditions in SQLAlchemy Core (bound parameters,
    # compiled once and cached by SQLAlchemy), run in Rasa's own session scope.

    def _session_condition(self, sender_id: str, all_sessions: bool) -> Any:
        """Events of `sender_id`, from its latest `session_started` on unless `all_sessions`."""
        events = self.SQLEvent.__table__
        condition = events.c.sender_id == sender_id
        if all_sessions:
            return condition
        session_start = (
            select(func.max(events.c.timestamp))
            .where(events.c.sender_id == sender_id, events.c.type_name == SessionStarted.type_name)
            .scalar_subquery()
        )
        return condition & or_(events.c.timestamp >= session_start, session_start.is_(None))

    async def _retrieve(self, sender_id: str, fetch_events_from_all_sessions: bool) -> DialogueStateTracker | None:
        events = self.SQLEvent.__table__
        statement = select(events.c.data).where(self._session_condition(sender_id, fetch_events_from_all_sessions)).order_by(events.c.id)
        with self.session_scope() as session:
            rows = session.execute(statement).scalars().all()
        if not self.domain or not rows:
            return None
        return DialogueStateTracker.from_dict(sender_id, [json.loads(data) for data in rows], self.domain.slots)

    def _additional_events(self, session: Any, tracker: DialogueStateTracker) -> Iterator:
        stored = session.execute(
            select(func.count()).select_from(self.SQLEvent.__table__).where(self._session_condition(tracker.sender_id, False))
        ).scalar_one()
        return itertools.islice(tracker.events, stored, len(tracker.events))

    async def save(self, tracker: DialogueStateTracker) -> None:
        """Store the events not stored yet, in one multi-row INSERT and one commit."""
        await self.stream_events(tracker)
        with self.session_scope() as session:
            rows = []
            for stored_event in self._additional_events(session, tracker):
                data = stored_event.as_dict()
                rows.append(
                    {
                        "sender_id": tracker.sender_id,
                        "type_name": stored_event.type_name,
                        "timestamp": data.get("timestamp"),
                        "intent_name": data.get("parse_data", {}).get("intent", {}).get("name"),
                        "action_name": data.get("name"),
                        "data": json.dumps(data),
                    }
                )
            if rows:
                session.execute(insert(self.SQLEvent.__table__), rows)
            session.commit()

    async def delete(self, sender_id: str) -> int:
        """Delete every stored event of one conversation (all sessions); returns how many.

        Used by the patient's `/forget`; the caller holds the conversation lock."""
        events = self.SQLEvent.__table__
        with self.session_scope() as session:
            deleted = session.execute(events.delete().where(events.c.sender_id == sender_id)).rowcount
            session.commit()
        forget_clinic_rows(self.engine, sender_id)
        return int(deleted or 0)

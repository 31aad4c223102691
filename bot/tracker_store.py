"""Rasa's SQLTrackerStore configured from one `DATABASE_URL` (SQLite default, PostgreSQL works).

Rasa's own config wants dialect/host/db/... keys; operators think in one URL. This subclass
parses the URL with SQLAlchemy and hands the parts to the stock store, so every conversation
is persisted and survives a restart of the Rasa server.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rasa.core.brokers.broker import EventBroker
from rasa.core.tracker_store import SQLTrackerStore
from rasa.shared.core.domain import Domain
from sqlalchemy import create_engine, event
from sqlalchemy.engine.url import make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import QueuePool

from bot.settings import DEFAULT_DATABASE_URL


def database_url() -> str:
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


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
        write of every message. Keep connections pooled instead, and use the write-ahead log
        (readers such as the clinic app do not block the bot). synchronous stays FULL: every
        committed message is on disk before the patient gets the reply (measured: NORMAL
        saved only ~1.5 ms per message here, not worth the durability)."""
        url = self.engine.url
        self.engine.dispose()
        self.engine = create_engine(url, poolclass=QueuePool, pool_size=2, connect_args={"check_same_thread": False})

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.close()

        self.sessionmaker = sessionmaker(bind=self.engine)

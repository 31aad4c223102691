"""One way to open `DATABASE_URL`, shared by the tracker store, the clinic app and the actions.

Kept free of Rasa imports so the action server and CLI load it cheaply.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.engine.url import make_url
from sqlalchemy.pool import QueuePool

from bot.settings import DEFAULT_DATABASE_URL


def create_db_engine(url: str) -> Engine:
    """The engine every part of the product uses for `DATABASE_URL`.

    SQLite: pooled connections, the write-ahead log (the clinic app reading does not block the
    bot writing) and synchronous=FULL (every committed message is on disk before the patient
    gets the reply; NORMAL saved only ~1.5 ms per message here). Others: SQLAlchemy defaults
    with pre-ping, so a restarted PostgreSQL is reconnected to transparently."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    if database:
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=QueuePool, pool_size=4, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    return engine


def database_url() -> str:
    """$DATABASE_URL as the Rasa server and action server see it (set by bot.servers.child_env)."""
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


@lru_cache(maxsize=4)
def shared_engine(url: str | None = None) -> Engine:
    """One pooled engine per URL per process (default: $DATABASE_URL)."""
    return create_db_engine(url or database_url())

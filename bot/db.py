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
        return create_engine(url, pool_pre_ping=True, hide_parameters=True)
    database = make_url(url).database
    if database and database != ":memory:":
        path = Path(database)
        path.parent.mkdir(parents=True, exist_ok=True)
        # health data: readable by the service's user only (SQLite gives its -wal/-shm files the same mode)
        path.touch(mode=0o600, exist_ok=True)
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
    # hide_parameters: a database error's message must not carry the row (a patient's message) into the logs
    engine = create_engine(
        url, poolclass=QueuePool, pool_size=4, connect_args={"check_same_thread": False, "timeout": 30}, hide_parameters=True
    )

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA secure_delete=ON")  # deleted rows are overwritten, not left in free pages
        cursor.close()

    return engine


def scrub_deleted(engine: Engine) -> bool:
    """After deleting a patient's rows (`/forget`, retention): leave no copy of them in the files.

    SQLite: `secure_delete` already zeroed the deleted content in the database pages; the
    write-ahead log still holds the older page images until a checkpoint, so checkpoint and
    truncate it. False if a reader kept the checkpoint from finishing (it is retried at the next
    deletion and happens by itself as the log fills). PostgreSQL keeps deleted row versions until
    VACUUM (autovacuum): see docs/reliability-and-security.md, "Data at rest"."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as connection:
        busy = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0]
    return busy == 0


def database_url() -> str:
    """$DATABASE_URL as the Rasa server and action server see it (set by bot.servers.child_env)."""
    return os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL


@lru_cache(maxsize=4)
def shared_engine(url: str | None = None) -> Engine:
    """One pooled engine per URL per process (default: $DATABASE_URL)."""
    return create_db_engine(url or database_url())

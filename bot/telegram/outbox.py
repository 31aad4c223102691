"""Messages the relay could not hand to Rasa yet, kept on disk until Rasa takes them.

A patient's message must reach the clinic log even when the Rasa server was down or failing
when it arrived. The relay answers with the fail-safe at once and parks the message here; a
background loop (and the next message of the same chat) delivers parked messages in their
original order once Rasa answers again. SQLite in WAL mode, a separate file from the tracker
store so an outage of that database does not block parking. Calls run in a worker thread so
the event loop never blocks on disk.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    chat_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    reply_to INTEGER,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_chat ON outbox (chat_id, id);
"""


@dataclass(frozen=True)
class Parked:
    id: int
    chat_id: int
    sender: str
    message_id: str
    text: str
    metadata: dict[str, Any]
    reply_to: int | None
    created: float
    attempts: int


class Outbox:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # parked messages are health data
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA secure_delete=ON")  # a delivered message is overwritten, not left behind
        self._db.executescript(_SCHEMA)
        self._lock = asyncio.Lock()  # one statement at a time on the shared connection
        # Chats with parked messages, kept in memory so the common case (nothing parked) costs
        # no disk read per message. One relay process owns one outbox file.
        self._parked_chats = {row[0] for row in self._db.execute("SELECT DISTINCT chat_id FROM outbox")}

    def has_pending(self, chat_id: int) -> bool:
        return chat_id in self._parked_chats

    async def _run(self, sql: str, params: tuple = ()) -> list[tuple]:
        async with self._lock:
            return await asyncio.to_thread(lambda: self._db.execute(sql, params).fetchall())

    async def park(self, chat_id: int, sender: str, message_id: str, text: str, metadata: dict[str, Any], reply_to: int | None) -> None:
        """Keep a message; parking the same message id twice keeps it once."""
        await self._run(
            "INSERT OR IGNORE INTO outbox (chat_id, sender, message_id, text, metadata, reply_to, created) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (chat_id, sender, message_id, text, json.dumps(metadata), reply_to, time.time()),
        )
        self._parked_chats.add(chat_id)

    async def pending(self, chat_id: int) -> list[Parked]:
        rows = await self._run(
            "SELECT id, chat_id, sender, message_id, text, metadata, reply_to, created, attempts FROM outbox WHERE chat_id = ? ORDER BY id",
            (chat_id,),
        )
        if not rows:
            self._parked_chats.discard(chat_id)
        return [Parked(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], r[8]) for r in rows]

    async def chats(self) -> list[int]:
        return [row[0] for row in await self._run("SELECT DISTINCT chat_id FROM outbox ORDER BY chat_id")]

    async def count(self) -> int:
        return int((await self._run("SELECT count(*) FROM outbox"))[0][0])

    async def delivered(self, parked_id: int) -> None:
        await self._run("DELETE FROM outbox WHERE id = ?", (parked_id,))

    async def failed_attempt(self, parked_id: int) -> None:
        await self._run("UPDATE outbox SET attempts = attempts + 1 WHERE id = ?", (parked_id,))

    async def forget(self, chat_id: int) -> int:
        self._parked_chats.discard(chat_id)
        return len(await self._run("DELETE FROM outbox WHERE chat_id = ? RETURNING id", (chat_id,)))

    def close(self) -> None:
        self._db.close()

"""Every update on disk before Telegram is told it arrived, so a killed relay loses nothing.

Telegram forgets an update once the relay confirms it: with long polling, by asking for the
next offset; with a webhook, by the HTTP 200. python-telegram-bot does both right after it puts
the update on the application's `update_queue`, long before a handler has given the message to
Rasa or parked it in the outbox. A SIGKILL in between lost the message.

`DurableUpdateQueue.put` therefore writes the update to the `inbox` table first (python-
telegram-bot awaits `put` before it confirms), and `DurableApplication.process_update` deletes
the row once the handlers are done, when the message is in Rasa's tracker or in the outbox. At
the next start the rows left are put back on the queue in order; the message claims
(dedup.py) make sure a message that had been answered is not answered twice, and one that had
not is. An update that fails `MAX_REPLAYS` starts in a row is logged and set aside, so one bad
update cannot keep a relay from starting (it is moved to `inbox_set_aside`, kept for an operator).

SQLite in WAL mode, in the outbox's file, on its own connection with `synchronous=NORMAL`:
a WAL commit survives the process being killed (the kill this guards against), at a fraction
of the cost of an fsync per update. If the disk cannot take the row the update is handled
anyway, from memory: a full disk must not stop the relay from answering. The inbox runs on a
thread of its own, so a database that hangs elsewhere (the claims) cannot hold up polling.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from telegram import Bot, Update
from telegram.ext import Application

log = logging.getLogger("bot.telegram")
MAX_REPLAYS = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    update_json TEXT NOT NULL,
    received REAL NOT NULL,
    replays INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS relay_instance (id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS inbox_set_aside (
    id INTEGER PRIMARY KEY,
    update_json TEXT NOT NULL,
    received REAL NOT NULL,
    set_aside REAL NOT NULL
);
"""


class Inbox:
    """The `inbox` table: updates received and not yet fully handled."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)  # updates carry health data
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()  # one statement at a time on the shared connection

    def add(self, update: dict[str, Any]) -> int:
        with self._lock:
            cursor = self._db.execute("INSERT INTO inbox (update_json, received) VALUES (?, ?)", (json.dumps(update), time.time()))
            return int(cursor.lastrowid or 0)

    def done(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM inbox WHERE id = ?", (row_id,))

    def unfinished(self) -> list[tuple[int, dict[str, Any]]]:
        """Rows left by an earlier run, oldest first; each call counts as one more replay, and rows
        replayed `MAX_REPLAYS` times already are set aside (deleted, with an error line)."""
        with self._lock:
            rows = self._db.execute("SELECT id, update_json, replays FROM inbox ORDER BY id").fetchall()
            poisoned = [row_id for row_id, _, replays in rows if replays >= MAX_REPLAYS]
            try:
                for row_id in poisoned:
                    log.error("relay.inbox.set_aside row=%d replays=%d (it failed every start)", row_id, MAX_REPLAYS)
                    self._db.execute("BEGIN")
                    keep = "INSERT OR REPLACE INTO inbox_set_aside SELECT id, update_json, received, ? FROM inbox WHERE id = ?"
                    self._db.execute(keep, (time.time(), row_id))
                    self._db.execute("DELETE FROM inbox WHERE id = ?", (row_id,))
                    self._db.execute("COMMIT")
                self._db.execute("UPDATE inbox SET replays = replays + 1")
            except sqlite3.Error as exc:  # e.g. a full disk: replay anyway, the counts stay as they were
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                log.error("relay.inbox.bookkeeping_failed type=%s (replaying anyway)", type(exc).__name__)
        return [(row_id, json.loads(text)) for row_id, text, replays in rows if replays < MAX_REPLAYS]

    def instance_id(self) -> str:
        """This relay's lasting id, made once per inbox file: the message claims (dedup.py) tell
        their own previous run's claims by it."""
        with self._lock:
            row = self._db.execute("SELECT id FROM relay_instance").fetchone()
            if row is None:
                row = (uuid.uuid4().hex,)
                self._db.execute("INSERT INTO relay_instance (id) VALUES (?)", row)
            return str(row[0])

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM inbox").fetchone()[0])

    def close(self) -> None:
        self._db.close()


class DurableUpdateQueue(asyncio.Queue):
    """The application's update queue: an update is in the inbox before `put` returns."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__()
        self.inbox = inbox
        self._rows: dict[int, int] = {}  # id(update) → inbox row
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-inbox")

    async def _call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def put(self, item: Any) -> None:
        if isinstance(item, Update):
            try:
                self._rows[id(item)] = await self._call(self.inbox.add, item.to_dict())
            except sqlite3.Error as exc:  # e.g. the disk is full: answer from memory rather than not at all
                log.error("relay.inbox.unavailable type=%s (handling the update without a copy on disk)", type(exc).__name__)
        await super().put(item)

    async def replay(self, bot: Bot) -> int:
        """Put the updates an earlier run left unfinished back on the queue, oldest first."""
        rows = await self._call(self.inbox.unfinished)
        for row_id, data in rows:
            update = Update.de_json(data, bot)
            self._rows[id(update)] = row_id
            await super().put(update)
        return len(rows)

    async def finished(self, update: Update) -> None:
        row_id = self._rows.pop(id(update), None)
        if row_id is not None:
            try:
                await self._call(self.inbox.done, row_id)
            except sqlite3.Error as exc:  # replayed at the next start; the claims drop it there
                log.warning("relay.inbox.done_failed type=%s", type(exc).__name__)


class DurableApplication(Application):
    """An `Application` that clears an update's inbox row once its handlers have run. A handler's
    error is handled (and the row cleared) by python-telegram-bot's error handlers; a kill or a
    cancellation leaves the row for the next start."""

    async def process_update(self, update: object) -> None:
        await super().process_update(update)
        if isinstance(update, Update) and isinstance(self.update_queue, DurableUpdateQueue):
            await self.update_queue.finished(update)

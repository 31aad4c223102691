"""Conversation locks: in memory for one Rasa server, in Redis when several share a database.

Rasa holds a per-conversation ticket lock while it handles a message, so two messages of one
patient are never processed at once. With several Rasa replicas the lock must live in Redis
(`REDIS_URL`, e.g. `redis://redis:6379/1`). Two fixes over Rasa 3.6's own stores:

* Rasa's `RedisLockStore` issues and returns tickets by GET, change, SET: two replicas taking
  a ticket for the same conversation at the same moment can both read the same lock, hand out
  the same ticket number and process two messages at once (events lost or stored twice). Here
  each read-change-write is one Redis transaction (WATCH/MULTI, retried on conflict).
* Rasa waits a full second between attempts to take a busy lock, so a patient's second quick
  message waited ~1 s. The wait between attempts is `LOCK_POLL_SECONDS` (default 0.02 s).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncGenerator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

from rasa.core.lock import TicketLock
from rasa.core.lock_store import LOCK_LIFETIME, InMemoryLockStore, LockStore, RedisLockStore
from rasa.utils.endpoints import EndpointConfig

POLL_SECONDS = float(os.environ.get("LOCK_POLL_SECONDS", "0.02"))
_DELETE = object()


class _FastPolling(LockStore):
    @asynccontextmanager
    async def lock(
        self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME, wait_time_in_seconds: float = POLL_SECONDS
    ) -> AsyncGenerator[TicketLock, None]:
        async with super().lock(conversation_id, lock_lifetime, min(wait_time_in_seconds, POLL_SECONDS)) as lock:
            yield lock


class FastInMemoryLockStore(_FastPolling, InMemoryLockStore):
    """Rasa's in-memory store (one process: its read-change-writes cannot interleave)."""


class AtomicRedisLockStore(_FastPolling, RedisLockStore):
    """Rasa's Redis store with each ticket operation one Redis transaction (see module doc)."""

    @classmethod
    def from_url(cls, url: str) -> AtomicRedisLockStore:
        parts = urlsplit(url)
        db = int(parts.path.strip("/") or 1)
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 6379,
            db=db,
            username=parts.username,
            password=parts.password,
            use_ssl=parts.scheme == "rediss",
            key_prefix=os.environ.get("REDIS_LOCK_PREFIX") or None,
        )

    def _change(self, conversation_id: str, change: Callable[[TicketLock | None], tuple[Any, Any]]) -> Any:
        """Apply `change` (old lock → (new lock, _DELETE or None to leave it; result)) atomically."""
        key = self.key_prefix + conversation_id

        def run(pipe: Any) -> Any:
            raw = pipe.get(key)
            new, result = change(TicketLock.from_dict(json.loads(raw)) if raw else None)
            pipe.multi()
            if new is _DELETE:
                pipe.delete(key)
            elif new is not None:
                pipe.set(key, new.dumps())
            return result

        return self.red.transaction(run, key, value_from_callable=True)

    def issue_ticket(self, conversation_id: str, lock_lifetime: float = LOCK_LIFETIME) -> int:
        def change(lock: TicketLock | None) -> tuple[TicketLock, int]:
            lock = lock or self.create_lock(conversation_id)
            return lock, lock.issue_ticket(lock_lifetime)

        return self._change(conversation_id, change)

    def update_lock(self, conversation_id: str) -> None:
        def change(lock: TicketLock | None) -> tuple[TicketLock | None, None]:
            if lock is not None:
                lock.remove_expired_tickets()
            return lock, None

        self._change(conversation_id, change)

    def _return_ticket(self, conversation_id: str, ticket_number: int, delete_when_idle: bool) -> None:
        def change(lock: TicketLock | None) -> tuple[Any, None]:
            if lock is None:
                return None, None
            lock.remove_ticket_for(ticket_number)
            return (_DELETE if delete_when_idle and not lock.is_someone_waiting() else lock), None

        self._change(conversation_id, change)

    def finish_serving(self, conversation_id: str, ticket_number: int) -> None:
        self._return_ticket(conversation_id, ticket_number, delete_when_idle=False)

    def cleanup(self, conversation_id: str, ticket_number: int) -> None:
        """Return the ticket; delete the lock in the same transaction when no one waits."""
        self._return_ticket(conversation_id, ticket_number, delete_when_idle=True)


class ConfiguredLockStore(LockStore):
    """What endpoints.yml names: Redis when `REDIS_URL` is set, else in memory.

    Rasa builds a custom lock store as `cls(endpoint_config=...)`; this returns the store the
    environment asks for, so one endpoints.yml serves one server and many replicas."""

    def __new__(cls, endpoint_config: EndpointConfig | None = None) -> LockStore:
        url = os.environ.get("REDIS_URL", "")
        return AtomicRedisLockStore.from_url(url) if url else FastInMemoryLockStore()

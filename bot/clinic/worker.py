"""The clinic's background work, in its own process (`python -m bot clinic-worker`).

Two loops, every `interval` seconds:
- *index*: fold new conversation events into the summaries (which opens worklist items and
  queues their alerts), escalate items nobody acknowledged in time, and record a heartbeat in
  the database (`clinic_state.worker_heartbeat`), so the app can tell staff when the work stopped;
- *deliver*: send the alerts that are due. Apart, so that an unreachable alert channel (10 s a
  try, retried with backoff) never holds up indexing, and a slow indexing never holds an alert.

Apart from the web app so the app can run as several pods while this runs as one
(deploy/k8s/clinic-worker.yaml); `make run` supervises both. Two workers at once would still be
safe (each alert is claimed before it is sent, each item opened once), only wasteful.

`/health` on CLINIC_WORKER_PORT answers 200 once an index round has succeeded and while they
keep succeeding, 503 before the first and once none has for `stale_after` seconds (a database
that went away, a round that hangs), so the supervisor or Kubernetes restarts it. A database
that is down at start is retried, never a crash. aiohttp's server: already installed with Rasa,
and one route needs no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

import aiohttp
import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import Engine

from bot.checkins.store import create_checkin_tables
from bot.clinic import alerts, indexer, worklist
from bot.clinic.schema import STATE, create_tables

log = logging.getLogger("bot.clinic.worker")
HEARTBEAT_KEY = "worker_heartbeat"
STALE_AFTER_S = 60.0


def heartbeat(engine: Engine) -> float | None:
    """When the worker last finished an index round (unix time), or None if it never has."""
    with engine.connect() as conn:
        value = conn.execute(sa.select(STATE.c.value).where(STATE.c.key == HEARTBEAT_KEY)).scalar()
    return float(value) if value is not None else None


def stalled(engine: Engine) -> dict[str, float | None] | None:
    """{"at": the last index round} when it is STALE_AFTER_S old or more, or there never was one
    (no worker ran against this database): what the app tells staff; None while the worker runs."""
    at = heartbeat(engine)
    if at is not None and time.time() - at < STALE_AFTER_S:
        return None
    return {"at": at}


def _beat(engine: Engine, at: float) -> None:
    with engine.begin() as conn:
        if not conn.execute(sa.update(STATE).where(STATE.c.key == HEARTBEAT_KEY).values(value=at)).rowcount:
            conn.execute(sa.insert(STATE).values(key=HEARTBEAT_KEY, value=at))


class ClinicWorker:
    """The two loops and what /health reports about them."""

    def __init__(
        self,
        engine: Engine,
        config: alerts.AlertConfig,
        interval: float = 1.0,
        stale_after: float = STALE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.config, self.interval, self.clock = engine, config, interval, clock
        self.stale_after = max(stale_after, 5 * interval)  # a slow interval must not read as stale between rounds
        self.last_ok: float | None = None
        self.failures = 0  # index rounds that failed since the last one that did not
        self._tables = False

    def index_round(self) -> None:
        """One fold, escalation and heartbeat (in a thread: all of it is database work)."""
        if not self._tables:  # here, so a database that is down at start is retried, not a crash loop
            create_tables(self.engine)  # the relay or the app may not have made them yet
            create_checkin_tables(self.engine)
            self._tables = True
        indexer.refresh(self.engine, self.config.tracking)
        worklist.escalate_due(self.engine, self.config.escalate_after, self.config.escalation_channels)
        _beat(self.engine, time.time())

    async def _every(self, what: str, step: Callable[[], Awaitable[None]], stop: asyncio.Event) -> None:
        """`step` every `interval` until `stop` (each step runs to its end: no two at once)."""
        while not stop.is_set():
            try:
                await step()
            except Exception as exc:  # keep going; /health turns 503 if indexing keeps failing
                log.error("clinic.worker.%s_failed type=%s", what, type(exc).__name__)
            with contextlib.suppress(TimeoutError):  # the interval, or sooner when told to stop
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def run(self, stop: asyncio.Event) -> None:
        async def index() -> None:
            try:
                await asyncio.to_thread(self.index_round)
            except Exception:
                self.failures += 1
                raise
            self.last_ok, self.failures = self.clock(), 0

        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:

            async def deliver() -> None:
                if self._tables:
                    await alerts.deliver_due(self.engine, self.config, session)

            await asyncio.gather(self._every("index", index, stop), self._every("deliver", deliver, stop))

    def healthy(self) -> bool:
        return self.last_ok is not None and self.clock() - self.last_ok < self.stale_after

    async def health(self, request: web.Request) -> web.Response:
        """Content-free, like the app's: whether rounds succeed, never what they found."""
        ago = None if self.last_ok is None else round(self.clock() - self.last_ok, 1)
        body = {"status": "ok" if self.healthy() else "stale", "last_round_s_ago": ago, "failed_rounds": self.failures}
        return web.json_response(body, status=200 if self.healthy() else 503)


async def serve(worker: ClinicWorker, host: str, port: int, stop: asyncio.Event) -> None:
    """The loops and the health route, until `stop` is set."""
    app = web.Application()
    app.router.add_get("/health", worker.health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("clinic.worker.started port=%d interval=%.1fs", port, worker.interval)
    try:
        await worker.run(stop)
    finally:
        await runner.cleanup()

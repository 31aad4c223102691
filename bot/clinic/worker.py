"""The clinic's background work, in its own process (`python -m bot clinic-worker`).

Every `interval` seconds: fold new conversation events into the summaries (which opens worklist
items and queues their alerts), escalate items nobody acknowledged in time, and send the alerts
that are due. Apart from the web app so the app can run as several pods while this runs as one
(deploy/k8s/clinic-worker.yaml); `make run` supervises both. Two workers at once would still be
safe (each alert is claimed before it is sent, each item opened once), only wasteful.

`/health` on CLINIC_WORKER_PORT answers 200 while rounds succeed and 503 once none has for
`stale_after` seconds (a database that went away, a round that hangs), so the supervisor or
Kubernetes restarts it. aiohttp's server: already installed with Rasa, and one route needs no more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

import aiohttp
from aiohttp import web
from sqlalchemy.engine import Engine

from bot.checkins.store import create_checkin_tables
from bot.clinic import alerts, indexer, worklist
from bot.clinic.schema import create_tables

log = logging.getLogger("bot.clinic.worker")


class ClinicWorker:
    """The rounds and what /health reports about them."""

    def __init__(
        self,
        engine: Engine,
        config: alerts.AlertConfig,
        interval: float = 1.0,
        stale_after: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.config, self.interval, self.stale_after, self.clock = engine, config, interval, stale_after, clock
        self.started = clock()
        self.last_ok: float | None = None
        self.failures = 0  # rounds that failed since the last one that did not
        self._tables = False

    async def round(self, session: aiohttp.ClientSession) -> None:
        if not self._tables:  # in a round, so a database that is down at start is retried, not a crash loop
            await asyncio.to_thread(create_tables, self.engine)  # the relay or the app may not have made them yet
            await asyncio.to_thread(create_checkin_tables, self.engine)
            self._tables = True
        await asyncio.to_thread(indexer.refresh, self.engine, self.config.tracking)
        await asyncio.to_thread(worklist.escalate_due, self.engine, self.config.escalate_after, self.config.escalation_channels)
        await alerts.deliver_due(self.engine, self.config, session)

    async def run(self, stop: asyncio.Event) -> None:
        """Rounds until `stop` is set; a failed round is logged and the next one retries."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(self.round(session), timeout=max(self.stale_after, self.interval))
                    self.last_ok, self.failures = self.clock(), 0
                except Exception as exc:  # keep going; /health turns 503 if it lasts
                    self.failures += 1
                    log.error("clinic.worker.round_failed type=%s", type(exc).__name__)
                with contextlib.suppress(TimeoutError):  # the interval, or sooner when told to stop
                    await asyncio.wait_for(stop.wait(), timeout=self.interval)

    def healthy(self) -> bool:
        since = self.last_ok if self.last_ok is not None else self.started
        return self.clock() - since < self.stale_after

    async def health(self, request: web.Request) -> web.Response:
        """Content-free, like the app's: whether rounds succeed, never what they found."""
        ago = None if self.last_ok is None else round(self.clock() - self.last_ok, 1)
        body = {"status": "ok" if self.healthy() else "stale", "last_round_s_ago": ago, "failed_rounds": self.failures}
        return web.json_response(body, status=200 if self.healthy() else 503)


async def serve(worker: ClinicWorker, host: str, port: int, stop: asyncio.Event) -> None:
    """The rounds and the health route, until `stop` is set."""
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

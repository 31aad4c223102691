"""The clinic worker on a real SQLite file and a real local webhook: a round opens the worklist
item and delivers its alert; /health turns 503 when rounds stop succeeding; the app runs none."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import aiohttp
import sqlalchemy as sa
from aiohttp import web

from bot.clinic import alerts, worklist
from bot.clinic.app import create_app
from bot.clinic.worker import ClinicWorker, heartbeat, serve
from bot.db import create_db_engine
from bot.servers import free_port
from tests.clinic.test_worklist import EMERGENCY_REASON, say


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_round_opens_the_item_and_delivers_its_alert_once(engine: sa.engine.Engine) -> None:
    received: list[dict] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(await request.json())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        config = alerts.AlertConfig(levels=("emergency",), webhook_url=f"http://127.0.0.1:{port}/hook")
        say(engine, "patient-a", time.time() - 5, "emergency", [EMERGENCY_REASON])
        worker = ClinicWorker(engine, config, interval=0.05)
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # more rounds: nothing is sent twice
        stop.set()
        await task
    finally:
        await runner.cleanup()
    [item] = worklist.items(engine, "open")[0]
    assert (item.sender_id, item.level) == ("patient-a", "emergency")
    assert len(received) == 1 and worker.last_ok is not None and worker.failures == 0


async def get_health(port: int) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as http:
        for _ in range(100):
            try:
                async with http.get(f"http://127.0.0.1:{port}/health") as r:
                    return r.status, await r.json()
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
    raise AssertionError("the worker's /health never answered")


async def test_health_is_200_only_while_rounds_succeed(engine: sa.engine.Engine, tmp_path: Path) -> None:
    clock = Clock()
    worker = ClinicWorker(engine, alerts.AlertConfig(levels=()), interval=0.01, stale_after=30, clock=clock)
    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(serve(worker, "127.0.0.1", port, stop))
    try:
        for _ in range(200):
            if worker.last_ok is not None:
                break
            await asyncio.sleep(0.02)
        status, body = await get_health(port)
        assert status == 200 and body["status"] == "ok", body
        worker.engine = create_db_engine(f"postgresql://crs:x@127.0.0.1:{free_port()}/crs")  # the database goes away
        for _ in range(200):  # a round already running on the old engine may still succeed: wait for one that fails
            if worker.failures:
                break
            await asyncio.sleep(0.02)
        clock.now += 31
        status, body = await get_health(port)
        assert status == 503 and body["status"] == "stale", body
    finally:
        stop.set()
        await task
    assert worker.failures > 0


async def test_a_database_down_at_start_is_retried_not_a_crash_and_not_ready(tmp_path: Path) -> None:
    broken = create_db_engine(f"postgresql://crs:x@127.0.0.1:{free_port()}/crs")  # nothing listens there
    worker = ClinicWorker(broken, alerts.AlertConfig(levels=()), interval=0.01)
    port, stop = free_port(), asyncio.Event()
    task = asyncio.create_task(serve(worker, "127.0.0.1", port, stop))
    try:
        status, body = await get_health(port)
        await asyncio.sleep(0.2)
        assert not task.done(), "still running, retrying"
        assert status == 503 and body["last_round_s_ago"] is None, body
    finally:
        stop.set()
        await task
    assert worker.failures > 1


def test_the_app_tells_staff_when_the_worker_has_stopped(engine: sa.engine.Engine) -> None:
    """No heartbeat (or an old one): every page says the background work stopped; a fresh one: no notice."""
    from starlette.testclient import TestClient

    from bot.clinic import accounts

    accounts.add_user(engine, "nurse", "correct horse battery", "viewer")
    client = TestClient(create_app(engine, "k"), follow_redirects=False)
    page = client.get("/login")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/login", data={"username": "nurse", "password": "correct horse battery", "csrf": csrf}).status_code == 303
    assert "background work has stopped" in client.get("/worklist").text
    assert client.get("/health").json() == {"status": "ok", "worker": "stale"}
    ClinicWorker(engine, alerts.AlertConfig(levels=())).index_round()
    assert "background work has stopped" not in client.get("/worklist").text
    assert client.get("/health").json() == {"status": "ok", "worker": "ok"}
    assert heartbeat(engine) is not None


def test_the_web_app_runs_no_background_work(engine: sa.engine.Engine) -> None:
    """Several app pods must not each fold events and send alerts: that is the worker's alone."""
    from starlette.testclient import TestClient

    say(engine, "patient-b", 1_700_000_000.0, "emergency", [EMERGENCY_REASON])
    with TestClient(create_app(engine, "k")) as client:  # `with`: the lifespan runs
        assert client.get("/health").status_code == 200
        asyncio.run(asyncio.sleep(0.5))
    assert worklist.items(engine, "open")[0] == []

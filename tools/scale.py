"""`make scale-test`: several Rasa replicas and action servers on one PostgreSQL and one Redis.

The layout of a multi-replica deployment (deploy/k8s/), on loopback: PostgreSQL (tracker store)
and Redis (conversation locks, bot/rasa_plugins/lock_store.py) from Debian's packages — installed when
missing and this runs as root — then per replica one action server and one Rasa server.

1. *Interleaved*: many conversations at once, each one's messages alternately to the replicas,
   each sent when the previous one was answered (as the relay sends a chat's messages); then
   bursts where two messages of one conversation reach both replicas at the same moment, so the
   replicas must take turns through the Redis lock. Checked in the database: every message
   stored once and none lost, in the order sent (bursts: either order — two servers receiving at
   the same instant define no order), each one's processing contiguous (no other message of the
   conversation in between), event timestamps in id order, and every request answered.
2. *Throughput*: closed-loop patients for a fixed time against one replica, then round-robin
   over all of them (each message to the next replica), on the same machine as the load.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import select
from starlette.datastructures import Secret

from bot import PROJECT_ROOT
from bot.clinic.schema import EVENTS
from bot.db import create_db_engine
from bot.servers import Stack, isolated_settings
from bot.settings import Settings
from tools.evaluate import patient_conversations, percentile
from tools.pgcluster import pg_bin, throwaway_cluster
from tools.redisserver import redis_bin, throwaway_redis

PACKAGES = {"postgresql": pg_bin, "redis-server": redis_bin}


def missing_services(install: bool = False) -> list[str]:
    """Debian packages still missing; with `install`, apt-get them first when root."""
    missing = [package for package, probe in PACKAGES.items() if probe() is None]
    apt = shutil.which("apt-get")
    if missing and install and os.geteuid() == 0 and apt:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run([apt, "update", "-qq"], env=env, check=False, capture_output=True)
        subprocess.run([apt, "install", "-y", "-qq", *missing], env=env, check=False, capture_output=True)
        missing = [package for package, probe in PACKAGES.items() if probe() is None]
    return missing


@dataclass
class Replicas:
    settings: list[Settings]
    database_url: str
    stacks: list[Stack] = field(default_factory=list)

    @property
    def urls(self) -> list[str]:
        return [s.rasa_url for s in self.settings]


@contextmanager
def replicas(work: Path, count: int = 2) -> Iterator[Replicas]:
    """PostgreSQL + Redis + `count` × (action server, Rasa server), all stopped on exit."""
    with throwaway_cluster() as pg, throwaway_redis() as redis_url:
        database_url = pg.create_database("scale")
        rig = Replicas([], database_url)
        try:
            for i in range(count):
                directory = work / f"replica-{i}"
                directory.mkdir(parents=True, exist_ok=True)
                settings = isolated_settings(directory, database_url=database_url, redis_url=Secret(redis_url))
                rig.settings.append(settings)
                rig.stacks.append(Stack(settings, log_dir=directory))
            with ThreadPoolExecutor(count) as pool:
                list(pool.map(Stack.start_actions, rig.stacks))
            rig.stacks[0].start_rasa()  # creates the tables; the others start on them together
            with ThreadPoolExecutor(count) as pool:
                list(pool.map(Stack.start_rasa, rig.stacks[1:]))
            yield rig
        finally:
            for stack in rig.stacks:
                stack.stop()


async def _post(http: aiohttp.ClientSession, url: str, sender: str, message: str) -> tuple[bool, float]:
    t0 = time.monotonic()
    try:
        async with http.post(f"{url}/webhooks/rest/webhook", json={"sender": sender, "message": message}) as r:
            answer = await r.json(content_type=None)
            ok = r.status == 200 and bool(answer)
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError):
        ok = False
    return ok, (time.monotonic() - t0) * 1000


def stored_events(database_url: str, senders: list[str]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    engine = create_db_engine(database_url)
    out: dict[str, list[tuple[str, dict[str, Any]]]] = {s: [] for s in senders}
    query = select(EVENTS.c.sender_id, EVENTS.c.type_name, EVENTS.c.data).where(EVENTS.c.sender_id.in_(senders)).order_by(EVENTS.c.id)
    with engine.connect() as c:
        for sender, type_name, data in c.execute(query):
            out[sender].append((type_name, json.loads(data)))
    engine.dispose()
    return out


def check_conversation(events: list[tuple[str, dict[str, Any]]], sent: list[str], ordered: bool) -> list[str]:
    """What is wrong with one conversation's stored events (empty: nothing)."""
    problems = []
    users = [data.get("text") for kind, data in events if kind == "user"]
    if ordered and users != sent:
        problems.append(f"user messages stored as {users}, sent {sent}")
    if not ordered and sorted(users) != sorted(sent):
        problems.append(f"user messages stored {sorted(users)}, sent {sorted(sent)}")
    seen: set[str] = set()
    for kind, data in events:
        key = json.dumps(data, sort_keys=True)
        if key in seen:
            problems.append(f"event stored twice: {kind} at {data.get('timestamp')}")
        seen.add(key)
    stamps = [data.get("timestamp") or 0 for _, data in events]
    if stamps != sorted(stamps):
        problems.append("event timestamps out of id order (two messages processed at once)")
    listening = True  # before a user message Rasa must have gone back to listening
    for kind, data in events:
        if kind == "user":
            if not listening:
                problems.append(f"message {data.get('text')!r} processed inside another one's turn")
            listening = False
        elif kind == "action" and data.get("name") == "action_listen":
            listening = True
    return problems


async def interleaved(rig: Replicas, conversations: int = 12, per_conversation: int = 6) -> dict[str, Any]:
    """Alternating and burst messages of the same conversations across all replicas (see module doc)."""
    run = uuid.uuid4().hex[:6]
    scripts = patient_conversations(conversations, per_conversation)
    urls = rig.urls
    answered: list[bool] = []
    latencies: list[float] = []

    async def alternating(http: aiohttp.ClientSession, c: int, messages: list[str]) -> None:
        for k, message in enumerate(messages):
            ok, ms = await _post(http, urls[(c + k) % len(urls)], f"scale-{run}-p{c}", message)
            answered.append(ok)
            latencies.append(ms)

    async def burst(http: aiohttp.ClientSession, c: int, messages: list[str]) -> None:
        for k in range(0, len(messages) - 1, 2):  # two at once, one to each of two replicas
            pair = [_post(http, urls[(c + k + j) % len(urls)], f"scale-{run}-b{c}", messages[k + j]) for j in (0, 1)]
            for ok, ms in await asyncio.gather(*pair):
                answered.append(ok)
                latencies.append(ms)

    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.gather(*(alternating(http, c, m) for c, m in enumerate(scripts)))
        await asyncio.gather(*(burst(http, c, m) for c, m in enumerate(scripts)))
    senders = [f"scale-{run}-p{c}" for c in range(conversations)] + [f"scale-{run}-b{c}" for c in range(conversations)]
    stored = await asyncio.to_thread(stored_events, rig.database_url, senders)
    problems: list[str] = []
    for c, messages in enumerate(scripts):
        problems += [f"p{c}: {p}" for p in check_conversation(stored[f"scale-{run}-p{c}"], messages, ordered=True)]
        sent = messages[: len(messages) // 2 * 2]
        problems += [f"b{c}: {p}" for p in check_conversation(stored[f"scale-{run}-b{c}"], sent, ordered=False)]
    return {
        "messages": len(answered),
        "unanswered": answered.count(False),
        "events_stored": sum(len(v) for v in stored.values()),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "problems": problems,
    }


async def closed_loop(urls: list[str], seconds: float, patients: int = 16) -> dict[str, Any]:
    """Each simulated patient sends its next message when the last is answered; messages go
    round-robin over `urls`. Returns answered messages per second and latency."""
    run = uuid.uuid4().hex[:6]
    scripts = patient_conversations(patients, 5)
    latencies: list[float] = []
    failures = 0
    counter = 0
    deadline = time.monotonic() + seconds

    async def patient(http: aiohttp.ClientSession, p: int) -> None:
        nonlocal failures, counter
        n = 0
        while time.monotonic() < deadline:
            url = urls[counter % len(urls)]
            counter += 1
            ok, ms = await _post(http, url, f"tput-{run}-{p}-{n // 5}", scripts[p][n % 5])
            n += 1
            if ok:
                latencies.append(ms)
            else:
                failures += 1

    start = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(patient(http, p) for p in range(patients)))
    elapsed = time.monotonic() - start
    return {
        "replicas": len(urls),
        "msg_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 0.5), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "failures": failures,
    }


def main(seconds: float = 20.0, patients: int = 16) -> dict[str, Any]:
    missing = missing_services(install=True)
    if missing:
        raise RuntimeError(f"cannot run without {', '.join(missing)} (apt-get install {' '.join(missing)})")
    work = Path(tempfile.mkdtemp(prefix="crs-scale-"))
    with replicas(work, 2) as rig:
        correctness = asyncio.run(interleaved(rig))
        one = asyncio.run(closed_loop(rig.urls[:1], seconds, patients))
        two = asyncio.run(closed_loop(rig.urls, seconds, patients))
    report = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "interleaved": correctness,
        "throughput": [one, two],
        "speedup": round(two["msg_s"] / one["msg_s"], 2) if one["msg_s"] else None,
    }
    out_dir = PROJECT_ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scale.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(r: dict[str, Any]) -> str:
    i = r["interleaved"]
    lines = [
        f"scale test — {r['machine']}, {r['date']}: PostgreSQL tracker store, Redis locks, 2 Rasa + 2 action servers",
        f"interleaved: {i['messages']} messages, {i['unanswered']} unanswered, {i['events_stored']} events stored, "
        f"p95 {i['p95_ms']} ms, problems: {len(i['problems'])}",
    ]
    lines += [f"  ! {p}" for p in i["problems"][:20]]
    for t in r["throughput"]:
        latency = f"p50 {t['p50_ms']} ms, p95 {t['p95_ms']} ms"
        lines.append(f"throughput, {t['replicas']} replica(s): {t['msg_s']} msg/s ({latency}, {t['failures']} failures)")
    lines.append(f"2 vs 1 replica: {r['speedup']}×")
    return "\n".join(lines)

"""`make bench-clinic`: the clinic app with 10,000 conversations / 200,000 events in the store.

For each backend (SQLite file; PostgreSQL when Debian's package is installed) it generates
Rasa-format events (user messages with symptom entities, slot events with levels and reasons,
bot replies) spread over 60 days, starts the clinic app (`python -m bot clinic`) on them, logs
in, and times over HTTP on loopback:
- the first indexing of all events into summaries,
- list pages (random filters and pages) and conversation pages: p50/p95 server time
  (targets p95 ≤ 200 ms and ≤ 100 ms),
- worklist pages (open, closed, all, by level; the items the indexing opened, most of them
  closed) and enrolled patients' pages with their temperature and pulse chart (p95 ≤ 200 ms),
- the CSV export of every conversation (target ≤ 5 s).
"""

from __future__ import annotations

import json
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
import sqlalchemy as sa

from bot import PROJECT_ROOT
from bot.clinic import worklist
from bot.clinic.indexer import refresh
from bot.clinic.schema import ENROLMENTS, EVENTS, create_tables
from bot.clinic.worklist import Tracking
from bot.clinical.knowledge import load_knowledge_base
from bot.db import create_db_engine
from bot.servers import Stack, child_env, isolated_settings
from tools.evaluate import percentile

PASSWORD = "benchmark password"
PHRASES = ["I feel", "since this morning", "my wife says", "still", "a bit", "really bad", "on and off"]


PATIENTS = 500  # enrolled patients, each with CONVERSATIONS_PER_PATIENT of the conversations
CONVERSATIONS_PER_PATIENT = 5


def patient_code(p: int) -> str:
    return f"BENCHP{p:03d}"


def generate(engine: sa.engine.Engine, conversations: int, events_per: int, seed: int = 7) -> int:
    """Insert `conversations` × `events_per` events (a third of the messages with a temperature
    or pulse reading; the first PATIENTS × CONVERSATIONS_PER_PATIENT conversations linked to
    enrolled patients); returns the number of events inserted."""
    rng = random.Random(seed)
    kb = load_knowledge_base()
    symptoms = sorted(kb.symptoms)
    levels = ["none", "monitor", "urgent", "emergency"]
    therapies = [t.name for t in kb.therapies]
    now = time.time()
    inserted = 0
    batch: list[dict[str, Any]] = []
    create_tables(engine)
    enrolled = min(PATIENTS, conversations // CONVERSATIONS_PER_PATIENT)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS),
            [
                {"code": patient_code(p), "label": f"Bench patient {p}",
                 "therapy": "tisagenlecleucel", "created_by": "bench", "created_at": now,
                 "infusion_date": time.strftime("%Y-%m-%d", time.gmtime(now - rng.uniform(0, 30) * 86400))}
                for p in range(enrolled)
            ],
        )  # fmt: skip
    for c in range(conversations):
        sender = f"bench-{c:05d}"
        metadata = {"telegram": {"enrolment_code": patient_code(c % enrolled)}} if c < enrolled * CONVERSATIONS_PER_PATIENT else {}
        at = now - rng.uniform(0, 60 * 86400)
        level_rank = 0
        found: list[str] = []
        for e in range(events_per):
            at += rng.uniform(5, 120)
            kind = e % 4
            if kind == 0:
                symptom = rng.choice(symptoms)
                found.append(symptom)
                text = f"{rng.choice(PHRASES)} {kb.symptoms[symptom].label}"
                entities = [{"entity": "symptom", "value": symptom, "role": "present", "start": 0, "end": len(text)}]
                if rng.random() < 0.33:
                    celsius = round(rng.uniform(36.4, 40.6), 1)
                    entities.append(
                        {
                            "entity": "vital",
                            "kind": "temperature",
                            "value": celsius,
                            "unit": "C",
                            "value_c": celsius,
                            "role": "measured",
                            "text": "t",
                        }
                    )
                    entities.append(
                        {"entity": "vital", "kind": "pulse", "value": rng.randint(60, 150), "unit": "/min", "role": "measured", "text": "p"}
                    )
                data = {
                    "event": "user",
                    "timestamp": at,
                    "text": text,
                    "metadata": metadata,
                    "parse_data": {"intent": {"name": "report_symptoms"}, "entities": entities},
                }
                row = {"type_name": "user", "intent_name": "report_symptoms", "action_name": None}
            elif kind == 1:
                level_rank = max(level_rank, rng.choice([0, 1, 2, 2, 3]))
                data = {"event": "slot", "timestamp": at, "name": "triage_level", "value": levels[level_rank]}
                row = {"type_name": "slot", "intent_name": None, "action_name": None}
            elif kind == 2:
                reasons = [f'said "x" → {s} → {levels[level_rank]} (rule)' for s in found[-2:]]
                name, value = rng.choice(
                    [("symptoms", sorted(set(found))), ("triage_reasons", reasons), ("therapy", rng.choice(therapies))]
                )
                data = {"event": "slot", "timestamp": at, "name": name, "value": value}
                row = {"type_name": "slot", "intent_name": None, "action_name": None}
            else:
                data = {"event": "bot", "timestamp": at, "text": "Please contact your care team now.", "metadata": {}}
                row = {"type_name": "bot", "intent_name": None, "action_name": None}
            batch.append({"sender_id": sender, "timestamp": at, "data": json.dumps(data), **row})
        if len(batch) >= 20_000:
            inserted += _flush(engine, batch)
    return inserted + _flush(engine, batch)


def _flush(engine: sa.engine.Engine, batch: list[dict[str, Any]]) -> int:
    if not batch:
        return 0
    with engine.begin() as conn:
        conn.execute(sa.insert(EVENTS), batch)
    n = len(batch)
    batch.clear()
    return n


def _percentiles(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(percentile(values, 0.5), 1),
        "p95_ms": round(percentile(values, 0.95), 1),
        "max_ms": round(max(values), 1),
        "n": len(values),
    }


def _login(url: str, user: str) -> requests.Session:
    http = requests.Session()
    page = http.get(f"{url}/login", timeout=30).text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, "no CSRF token on the login page"
    r = http.post(f"{url}/login", data={"username": user, "password": PASSWORD, "csrf": csrf.group(1), "next": "/"}, timeout=30)
    r.raise_for_status()
    return http


def _timed(http: requests.Session, url: str) -> float:
    t0 = time.perf_counter()
    r = http.get(url, timeout=120)
    r.raise_for_status()
    return (time.perf_counter() - t0) * 1000


def handle_most_items(engine: sa.engine.Engine, seed: int = 5) -> dict[str, int]:
    """A clinic a few months in: 90 % of the items closed, 5 % acknowledged, 5 % waiting."""
    rng = random.Random(seed)
    found, _ = worklist.items(engine, "all", limit=1_000_000)
    for item in found:
        roll = rng.random()
        if roll < 0.95:
            worklist.acknowledge(engine, item.id, "bench", now=item.opened_at + rng.uniform(30, 3600))
        if roll < 0.9:
            worklist.close(engine, item.id, "bench", rng.choice(list(worklist.OUTCOMES)), "", now=item.opened_at + rng.uniform(3600, 7200))
    return {"items": len(found), "open": worklist.open_count(engine)}


def bench_backend(name: str, database_url: str, workdir: Path, conversations: int, events_per: int, requests_n: int) -> dict[str, Any]:
    engine = create_db_engine(database_url)
    t0 = time.perf_counter()
    events = generate(engine, conversations, events_per)
    generated_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    refresh(engine, Tracking(levels=("emergency", "urgent")))
    index_s = time.perf_counter() - t0
    items = handle_most_items(engine)
    settings = isolated_settings(workdir, database_url=database_url)
    subprocess.run(
        [sys.executable, "-m", "bot", "users", "add", "bench", "--role", "admin", "--password-stdin"],
        input=PASSWORD + "\n", text=True, check=True, env=child_env(settings), capture_output=True,
    )  # fmt: skip
    stack = Stack(settings, log_dir=workdir)
    stack.start_clinic()
    try:
        http = _login(settings.clinic_url, "bench")
        rng = random.Random(3)
        symptoms = sorted(load_knowledge_base().symptoms)
        for _ in range(5):  # warm up
            _timed(http, f"{settings.clinic_url}/")
        list_ms = []
        for _ in range(requests_n):
            params = rng.choice(
                [{}, {"level": "emergency"}, {"symptom": rng.choice(symptoms)}, {"page": str(rng.randint(1, 150))},
                 {"level": "urgent", "page": str(rng.randint(1, 40))}, {"therapy": "tisagenlecleucel"}]
            )  # fmt: skip
            list_ms.append(_timed(http, f"{settings.clinic_url}/?{urlencode(params)}"))
        conv_ms = [_timed(http, f"{settings.clinic_url}/conversations/bench-{rng.randrange(conversations):05d}") for _ in range(requests_n)]
        worklist_ms = []
        for _ in range(requests_n):
            params = rng.choice([{}, {"level": "emergency"}, {"status": "all"}, {"status": "closed", "level": "urgent"}])
            worklist_ms.append(_timed(http, f"{settings.clinic_url}/worklist?{urlencode(params)}"))
        enrolled = min(PATIENTS, conversations // CONVERSATIONS_PER_PATIENT)
        patient_ms = [_timed(http, f"{settings.clinic_url}/patients/{patient_code(rng.randrange(enrolled))}") for _ in range(requests_n)]
        t0 = time.perf_counter()
        r = http.get(f"{settings.clinic_url}/export/conversations.csv", timeout=300)
        r.raise_for_status()
        export_s = time.perf_counter() - t0
        rows = r.text.count("\n") - 1
    finally:
        stack.stop()
        engine.dispose()
    return {
        "backend": name,
        "events": events,
        "conversations": conversations,
        "generate_s": round(generated_s, 1),
        "first_index_s": round(index_s, 1),
        "list_page": _percentiles(list_ms),
        "conversation_page": _percentiles(conv_ms),
        "worklist_items": items,
        "worklist_page": _percentiles(worklist_ms),
        "patient_page": _percentiles(patient_ms),
        "csv_export_all_s": round(export_s, 2),
        "csv_rows": rows,
    }


def main(conversations: int = 10_000, events_per: int = 20, requests_n: int = 300) -> dict[str, Any]:
    from tools.pgcluster import pg_bin, throwaway_cluster

    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "backends": [],
    }
    work = Path(tempfile.mkdtemp(prefix="crs-bench-clinic-"))
    sqlite_dir = work / "sqlite"
    sqlite_dir.mkdir()
    results["backends"].append(
        bench_backend("sqlite", f"sqlite:///{sqlite_dir / 'tracker.db'}", sqlite_dir, conversations, events_per, requests_n)
    )
    if pg_bin() is not None:
        pg_dir = work / "pg"
        pg_dir.mkdir()
        with throwaway_cluster() as cluster:
            url = cluster.create_database("bench_clinic")
            results["backends"].append(bench_backend("postgresql", url, pg_dir, conversations, events_per, requests_n))
    out = PROJECT_ROOT / "var" / "bench" / "clinic.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


def format_results(r: dict[str, Any]) -> str:
    lines = [f"clinic benchmark — {r['machine']}, {r['date']}"]
    for b in r["backends"]:
        lines += [
            f"{b['backend']}: {b['conversations']} conversations, {b['events']} events "
            f"(generated in {b['generate_s']} s, first indexing {b['first_index_s']} s)",
            f"  list page          p50 {b['list_page']['p50_ms']} ms  p95 {b['list_page']['p95_ms']} ms  (target p95 ≤ 200 ms)",
            f"  conversation page  p50 {b['conversation_page']['p50_ms']} ms  "
            f"p95 {b['conversation_page']['p95_ms']} ms  (target p95 ≤ 100 ms)",
            f"  worklist page      p50 {b['worklist_page']['p50_ms']} ms  p95 {b['worklist_page']['p95_ms']} ms  "
            f"(target p95 ≤ 200 ms; {b['worklist_items']['items']} items, {b['worklist_items']['open']} open)",
            f"  patient page       p50 {b['patient_page']['p50_ms']} ms  p95 {b['patient_page']['p95_ms']} ms  "
            f"(target p95 ≤ 200 ms; {CONVERSATIONS_PER_PATIENT} conversations and their chart)",
            f"  CSV export of all {b['csv_rows']} conversations: {b['csv_export_all_s']} s  (target ≤ 5 s)",
        ]
    return "\n".join(lines)

"""The tracker store on PostgreSQL: same chat, restart of the Rasa server, nothing lost.

Runs against a throw-away PostgreSQL cluster started from Debian's `postgresql` package
(`.ci/run` installs it); skipped, with the reason, where the package is absent.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg2
import pytest

from bot.servers import Stack, isolated_settings
from tools.evaluate import RestClient
from tools.pgcluster import PgCluster

pytestmark = pytest.mark.integration


def test_conversation_survives_restart_on_postgres(pg_cluster: PgCluster, tmp_path: Path) -> None:
    pg_url = pg_cluster.create_database("tracker_restart")
    settings = isolated_settings(tmp_path, database_url=pg_url)
    stack = Stack(settings, log_dir=tmp_path)
    stack.start()
    try:
        client = RestClient(settings.rasa_url, str(settings.rasa_api_token))
        sid = f"pg-{uuid.uuid4().hex[:8]}"
        client.send(sid, "I'm on blinatumomab")
        assert "911" in "".join(m.get("text", "") for m in client.send(sid, "my lips are going blue"))
        with psycopg2.connect(pg_url) as conn, conn.cursor() as cur:
            cur.execute("select count(*) from events where sender_id = %s", (sid,))
            rows = cur.fetchone()[0]
        assert rows > 0
        stack.stop_one("rasa")
        stack.start_rasa()
        slots = client.tracker(sid)["slots"]
        assert slots["triage_level"] == "emergency"
        assert slots["symptoms"] == ["skin_discoloration"] and "blinatumomab" in slots["therapy"]
    finally:
        stack.stop()


def test_two_clinic_indexers_on_postgres_open_one_item_and_queue_one_alert_per_emergency(
    pg_cluster: PgCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two clinic workers fold the same events at the same time (a rolling deploy, two
    replicas): every emergency gets exactly one worklist item and one alert per channel."""
    import json
    import threading
    import time

    import sqlalchemy as sa

    from bot.clinic import alerts, indexer
    from bot.clinic.schema import ALERTS, EVENTS, WORKLIST, create_tables
    from bot.db import create_db_engine

    url = pg_cluster.create_database("clinic_race")
    engines = [create_db_engine(url) for _ in range(2)]
    create_tables(engines[0])
    config = alerts.AlertConfig(levels=("emergency",), webhook_url="http://127.0.0.1:9/hook")
    senders = [f"race-{n}" for n in range(60)]
    with engines[0].begin() as conn:  # each chat said hello first: its summary row exists before the emergency
        for sender in senders:
            conn.execute(
                sa.insert(EVENTS).values(sender_id=sender, type_name="user", timestamp=time.time(), data=json.dumps({"text": "hi"}))
            )
    indexer.refresh(engines[0], config.tracking)
    for sender in senders:  # then every chat's emergency, folded by both at the same moment
        slot = {"event": "slot", "name": "triage_level", "value": "emergency", "timestamp": time.time()}
        reasons = {
            "event": "slot",
            "name": "triage_reasons",
            "value": ["x → confusion → emergency (emergency symptom)"],
            "timestamp": time.time(),
        }
        with engines[1].begin() as conn:
            for data in (slot, reasons):
                conn.execute(sa.insert(EVENTS).values(sender_id=sender, type_name="slot", timestamp=time.time(), data=json.dumps(data)))
    errors: list[BaseException] = []
    start = threading.Barrier(2)
    fold = indexer._fold

    def slow_fold(*args: object, **kwargs: object) -> object:
        """A big batch: both instances are inside their transactions at the same time."""
        found = fold(*args, **kwargs)  # type: ignore[arg-type]
        time.sleep(0.5)
        return found

    monkeypatch.setattr(indexer, "_fold", slow_fold)

    def index(engine: sa.engine.Engine) -> None:
        start.wait()
        try:
            indexer.refresh(engine, config.tracking)
        except sa.exc.IntegrityError:
            pass  # the other instance opened these items first: this batch rolls back, as in the worker's loop
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=index, args=(e,)) for e in engines]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    indexer.refresh(engines[0], config.tracking)
    assert errors == []
    with engines[0].connect() as conn:
        items = conn.execute(sa.select(WORKLIST.c.sender_id, sa.func.count()).group_by(WORKLIST.c.sender_id)).all()
        notices = conn.execute(sa.select(ALERTS.c.sender_id, sa.func.count()).group_by(ALERTS.c.sender_id)).all()
    assert sorted(items) == [(s, 1) for s in sorted(senders)]
    assert sorted(notices) == [(s, 1) for s in sorted(senders)]

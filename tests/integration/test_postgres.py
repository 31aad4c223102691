"""The tracker store on PostgreSQL: same chat, restart of the Rasa server, nothing lost.

Runs against a throw-away PostgreSQL cluster started from Debian's `postgresql` package
(`.ci/run` installs it); skipped, with the reason, where the package is absent.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import psycopg2
import pytest

from bot.evaluate import RestClient
from bot.pgcluster import PgCluster
from bot.servers import Stack, isolated_settings

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

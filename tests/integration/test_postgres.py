"""The tracker store on PostgreSQL: same chat, restart of the Rasa server, nothing lost.

Runs against a throw-away PostgreSQL cluster started from Debian's `postgresql` package
(`.ci/run` installs it); skipped, with the reason, where the package is absent.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from bot.evaluate import RestClient
from bot.servers import Stack, free_port, isolated_settings

pytestmark = pytest.mark.integration


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run the cluster as the `postgres` system user then."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
    # Not under pytest's tmp dir: that is private to root, and the cluster runs as `postgres`.
    home = Path(tempfile.mkdtemp(prefix="crs-pg-"))
    data = home / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()
    run = lambda *cmd: subprocess.run(_as_postgres([str(bin_dir / cmd[0]), *cmd[1:]]), check=True, capture_output=True, timeout=120)  # noqa: E731
    run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1"
    run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start")
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "crs")
        yield f"postgresql://postgres@127.0.0.1:{port}/crs"
    finally:
        run("pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")
        shutil.rmtree(home, ignore_errors=True)


def test_conversation_survives_restart_on_postgres(pg_url: str, tmp_path: Path) -> None:
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

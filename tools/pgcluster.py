"""A throw-away PostgreSQL cluster from Debian's `postgresql` package, for tests and benchmarks.

initdb + pg_ctl on a spare loopback port in a temporary directory, trust authentication, gone
again on exit. As root the cluster runs as the `postgres` system user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

from bot.servers import free_port


def pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@dataclass(frozen=True)
class PgCluster:
    port: int
    data: Path | None = None  # set for a cluster this process started (it can stop and start it)
    options: str = ""

    def _pg_ctl(self, *args: str) -> None:
        bin_dir = pg_bin()
        assert bin_dir is not None and self.data is not None, "not a cluster started here"
        cmd = _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(self.data), *args])
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def stop(self) -> None:
        """Shut the server down (fault tests: the database unreachable)."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def start(self) -> None:
        self._pg_ctl("-o", self.options, "-l", str(self.data / "log"), "-w", "start")  # type: ignore[operator]

    def set_read_only(self, on: bool) -> None:
        """Every new transaction read-only, as on a standby after a failover (fault tests).

        `ALTER SYSTEM` + reload reaches the sessions already open too, unlike `ALTER DATABASE`."""
        self._admin(f"ALTER SYSTEM SET default_transaction_read_only = {'on' if on else 'off'}", "SELECT pg_reload_conf()")

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        self._admin(f'CREATE DATABASE "{name}"')  # our own identifier, not input
        return self.url(name)

    def _admin(self, *statements: str) -> None:
        """Run statements as the superuser outside a transaction (CREATE DATABASE, ALTER SYSTEM refuse one)."""
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres")
        conn.autocommit = True
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
        finally:
            conn.close()


@contextmanager
def throwaway_cluster() -> Iterator[PgCluster]:
    bin_dir = pg_bin()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
    # Not under a root-private temp dir: the cluster runs as `postgres`.
    home = Path(tempfile.mkdtemp(prefix="crs-pg-"))
    data = home / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(home, "postgres")
        shutil.chown(data, "postgres")
    port = free_port()

    def run(*cmd: str) -> None:
        subprocess.run(_as_postgres([str(bin_dir / cmd[0]), *cmd[1:]]), check=True, capture_output=True, timeout=120)

    run("initdb", "-D", str(data), "-A", "trust", "-U", "postgres")
    opts = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run("pg_ctl", "-D", str(data), "-o", opts, "-l", str(data / "log"), "-w", "start")
    try:
        yield PgCluster(port, data, opts)
    finally:
        stop = [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]
        subprocess.run(_as_postgres(stop), capture_output=True, timeout=120)  # a fault test may have stopped it
        shutil.rmtree(home, ignore_errors=True)

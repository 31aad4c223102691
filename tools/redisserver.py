"""A throw-away Redis server from Debian's `redis-server` package, for tests and `make scale-test`.

Loopback only, a spare port, no persistence (the lock store keeps nothing worth saving), gone
again on exit.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bot.servers import free_port


def redis_bin() -> str | None:
    return shutil.which("redis-server")


def ping(port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def throwaway_redis() -> Iterator[str]:
    """Start redis-server; yields its URL (database 1, as Rasa's lock store defaults to)."""
    binary = redis_bin()
    if binary is None:
        raise FileNotFoundError("Redis is not installed (apt-get install redis-server)")
    home = Path(tempfile.mkdtemp(prefix="crs-redis-"))
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(home)]
    proc = subprocess.Popen(cmd, stdout=(home / "log").open("w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not ping(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {(home / 'log').read_text()[-500:]}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/1"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)

"""`make run`'s supervisor: one crashed part is restarted; the rest keep serving patients.

The product is four processes: the action server, the Rasa server, the Telegram relay and
the clinic app. When one exits (an out-of-memory kill, a crash), the others keep running —
the relay answers with its fail-safe and parks messages while Rasa is away, Rasa answers with
its own fail-safe while the action server is away — and the supervisor starts it again after
a backoff of 1 s, doubling to 30 s (reset once it has stayed up a minute), logging which
process, its exit code or signal and the restart count. Only a crash loop (5 exits of one
process within 2 minutes) stops everything and exits non-zero, saying why, so that systemd or
Kubernetes, which can do more (another node, an alert), take over.

Status: `python -m bot status` (`make status`), and the same as JSON on loopback for a
monitoring probe: `GET http://127.0.0.1:$STATUS_PORT/status` (200) and `/health` (200 when
every process is up and answering, else 503).

Hand-written (about 200 lines) rather than a library: supervisord retries with a linear delay
only while a program starts and never gives up on its own; honcho stops every process when
one exits (what `make run` did before); circus brings ZeroMQ and Tornado for what a loop over
`subprocess.Popen.poll` does.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from bot.servers import Stack, actions_command, is_up, rasa_command

log = logging.getLogger("bot.supervisor")
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0
STABLE_AFTER_S = 60.0  # up this long: the next crash starts again from the shortest backoff
CRASH_LIMIT, CRASH_WINDOW_S = 5, 120.0  # this many exits of one process within the window: a crash loop
READY_TIMEOUT_S = 180.0


def describe_exit(returncode: int) -> str:
    """ "exit code 1" or "signal SIGKILL" (Popen reports a signal as a negative code)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class Child:
    """One supervised process and its history."""

    name: str
    command: Callable[[], list[str]]
    health_url: str | None  # answers 200 when the process serves; None: no port (the relay when polling)
    port: int | None
    proc: subprocess.Popen | None = None
    started_at: float | None = None  # wall clock, for the status
    started_mono: float = 0.0
    restarts: int = 0
    exits: deque[float] = field(default_factory=deque)  # monotonic times of recent exits
    backoff: float = BACKOFF_MIN_S
    restart_at: float | None = None  # monotonic time of the next start while it is down
    last_exit: str = ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class CrashLoop(Exception):
    pass


class Supervisor:
    """Starts the children, restarts the ones that exit, reports their state."""

    def __init__(self, stack: Stack, children: list[Child], clock: Callable[[], float] = time.monotonic) -> None:
        self.stack, self.children, self.clock = stack, {c.name: c for c in children}, clock
        self._lock = threading.Lock()

    @classmethod
    def for_stack(cls, stack: Stack) -> Supervisor:
        s = stack.settings
        children = [
            Child("actions", lambda: actions_command(s), f"{s.actions_url}/health", s.actions_port),
            Child("rasa", lambda: rasa_command(s), f"{s.rasa_url}/webhooks/rest/", s.rasa_port),
        ]
        if s.telegram_bot_token:
            port = s.telegram_webhook_port if s.telegram_webhook_url else None
            children.append(Child("relay", lambda: [sys.executable, "-m", "bot", "relay"], None, port))
        children.append(Child("clinic", lambda: [sys.executable, "-m", "bot", "clinic"], f"{s.clinic_url}/health", s.clinic_port))
        return cls(stack, children)

    # ------------------------------------------------------------------ processes
    def start(self, child: Child) -> None:
        with self._lock:
            child.proc = self.stack.spawn(child.name, child.command())
            child.started_at, child.started_mono, child.restart_at = time.time(), self.clock(), None

    def start_all(self) -> None:
        for child in self.children.values():
            self.start(child)

    def check(self) -> None:
        """Notice exits, schedule and make restarts; raises CrashLoop when one process keeps dying."""
        now = self.clock()
        for child in self.children.values():
            if child.proc is not None and child.proc.poll() is not None:
                self._exited(child, now)
            elif child.running and now - child.started_mono >= STABLE_AFTER_S:
                child.backoff = BACKOFF_MIN_S
            if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                child.restarts += 1
                self.start(child)
                log.warning("supervisor.restarted process=%s restarts=%d pid=%s", child.name, child.restarts, child.proc.pid)  # type: ignore[union-attr]

    def _exited(self, child: Child, now: float) -> None:
        child.last_exit = describe_exit(child.proc.returncode)  # type: ignore[union-attr]
        child.proc = None
        self.stack.procs.pop(child.name, None)
        child.exits.append(now)
        while child.exits and child.exits[0] < now - CRASH_WINDOW_S:
            child.exits.popleft()
        if len(child.exits) >= CRASH_LIMIT:
            raise CrashLoop(
                f"{child.name} exited {len(child.exits)} times within {CRASH_WINDOW_S:.0f} s (last: {child.last_exit}); "
                f"see {self.stack.log_dir / (child.name + '.log')}"
            )
        child.restart_at = now + child.backoff
        log.warning(
            "supervisor.exited process=%s how=%r restarts=%d next_start_in=%.0fs log=%s",
            child.name, child.last_exit, child.restarts, child.backoff, self.stack.log_dir / f"{child.name}.log",
        )  # fmt: skip
        child.backoff = min(BACKOFF_MAX_S, child.backoff * 2)

    def stop_all(self) -> None:
        with self._lock:
            self.stack.stop()
            for child in self.children.values():
                child.proc = None

    # ------------------------------------------------------------------ status
    def status(self, probe: bool = True) -> dict[str, Any]:
        """Each process: state, pid, restarts, uptime, port and whether it answers there."""
        with self._lock:
            rows = {name: self._row(c) for name, c in self.children.items()}
        if probe:
            urls = {n: c.health_url for n, c in self.children.items() if c.health_url and rows[n]["pid"]}
            with ThreadPoolExecutor(max_workers=4) as pool:
                answers = dict(zip(urls, pool.map(lambda u: is_up(u, timeout=1.0), urls.values()), strict=True))
            for name, row in rows.items():
                row["answering"] = answers.get(name, False) if self.children[name].health_url else None
                if row["state"] == "running":
                    row["state"] = "up" if row["answering"] in (True, None) else "starting"
        healthy = all(r["state"] == "up" for r in rows.values())
        return {"healthy": healthy, "supervisor_pid": os.getpid(), "processes": rows}

    def _row(self, c: Child) -> dict[str, Any]:
        now = self.clock()
        running = c.running
        return {
            "state": "running" if running else "restarting" if c.restart_at is not None else "down",
            "pid": c.proc.pid if running and c.proc else None,
            "restarts": c.restarts,
            "uptime_s": round(now - c.started_mono, 1) if running else None,
            "port": c.port,
            "last_exit": c.last_exit,
            "next_start_in_s": round(max(0.0, c.restart_at - now), 1) if c.restart_at is not None else None,
        }

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> bool:
        """True once every process answers (restarting the ones that exit meanwhile)."""
        deadline = self.clock() + timeout
        while self.clock() < deadline:
            self.check()
            if self.status()["healthy"]:
                return True
            time.sleep(0.3)
        return False

    # ------------------------------------------------------------------ loop
    def run(self, status_port: int, on_ready: Callable[[], None] = lambda: None) -> int:
        """Supervise until SIGTERM/SIGINT (0) or a crash loop (1)."""
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        server = serve_status(self, status_port)
        try:
            self.start_all()
            if self.wait_ready():
                on_ready()
            else:
                sys.stderr.write(f"not every process answers yet: {json.dumps(self.status()['processes'])}\n")
            while not stop.is_set():
                self.check()
                stop.wait(0.5)
            return 0
        except CrashLoop as exc:
            sys.stderr.write(f"crash loop, stopping everything: {exc}\n")
            log.error("supervisor.crash_loop %s", exc)
            return 1
        finally:
            server.shutdown()
            self.stop_all()


def serve_status(supervisor: Supervisor, port: int) -> ThreadingHTTPServer:
    """`/status` (JSON, 200) and `/health` (200 healthy, 503 not) on loopback, for probes."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path not in ("/status", "/health"):
                self.send_error(404)
                return
            body = supervisor.status()
            code = 200 if self.path == "/status" or body["healthy"] else 503
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, name="status-http", daemon=True).start()
    return server


def format_status(status: dict[str, Any]) -> str:
    """The table `python -m bot status` prints."""
    lines = [f"{'process':<9} {'state':<11} {'pid':>7} {'restarts':>8} {'uptime':>9}  port"]
    for name, r in status["processes"].items():
        uptime = f"{r['uptime_s']:.0f} s" if r["uptime_s"] is not None else "-"
        answering = {True: "answering", False: "NOT answering", None: "no port (long polling)" if r["port"] is None else "-"}[
            r.get("answering")
        ]
        port = f"{r['port']} {answering}" if r["port"] else answering
        extra = f"  last: {r['last_exit']}" if r["last_exit"] else ""
        if r["next_start_in_s"] is not None:
            extra += f", restarting in {r['next_start_in_s']:.0f} s"
        lines.append(f"{name:<9} {r['state']:<11} {r['pid'] or '-':>7} {r['restarts']:>8} {uptime:>9}  {port}{extra}")
    lines.append("healthy" if status["healthy"] else "NOT healthy")
    return "\n".join(lines)

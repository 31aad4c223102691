"""`make run`'s supervisor: one crashed part is restarted; the rest keep serving patients.

The product is five processes: the action server, the Rasa server, the Telegram relay, the
clinic app and the clinic worker. When one exits (an out-of-memory kill, a crash) or stops answering (a hung
event loop: three failed health checks in a row once it had been healthy, or not ready within
its start-up deadline, and it is killed), the others keep running — the relay answers with its
fail-safe and parks messages while Rasa is away, Rasa answers with its own fail-safe while the
action server is away — and the supervisor starts it again after a backoff of 1 s, doubling to
30 s (reset once it has been healthy for a minute), logging which process, how it ended and
the restart count. Only a crash loop stops everything and exits non-zero, saying why, so that
systemd or Kubernetes, which can do more (another node, an alert), take over: one process
ending 5 times within 2 minutes, or 5 times in a row without ever becoming healthy (a Rasa that
dies 40 s into loading would otherwise retry forever).

SIGTERM, SIGINT (Ctrl-C), SIGHUP and SIGQUIT stop everything cleanly, also during start-up:
the relay first (no new messages taken), then the others, all within one 45 s deadline. The
children are told to die with the supervisor (PR_SET_PDEATHSIG), so even a SIGKILLed
supervisor leaves no orphan holding a port.

Status: `python -m bot status` (`make status`), and the same as JSON on loopback for a
monitoring probe: `GET http://127.0.0.1:$STATUS_PORT/status` (200) and `/health` (200 when
every process is up and answering, else 503).

Hand-written (about 250 lines) rather than a library: supervisord retries with a linear delay
only while a program starts and never gives up on its own; honcho stops every process when
one exits (what `make run` did before); circus brings ZeroMQ and Tornado for what a loop over
`subprocess.Popen.poll` does.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bot.servers import RELAY_READY, Stack, actions_command, clinic_worker_command, is_up, logged_since, rasa_command

log = logging.getLogger("bot.supervisor")
BACKOFF_MIN_S, BACKOFF_MAX_S = 1.0, 30.0
STABLE_AFTER_S = 60.0  # healthy this long: the next crash starts again from the shortest backoff
CRASH_LIMIT, CRASH_WINDOW_S = 5, 120.0  # this many ends of one process within the window: a crash loop
PROBE_EVERY_S = 5.0  # health checks of a process that is up
UNANSWERED_LIMIT = 3  # failed health checks in a row, once healthy: hung, killed and restarted
STOP_ORDER = ["relay", "rasa", "actions", "clinic"]  # the relay first: it takes no new messages while the rest stop
READY_TIMEOUT_S = 240.0


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
    ready: Callable[[Child], bool] | None  # answers when the process serves; None: running is enough
    port: int | None
    start_deadline_s: float = 90.0  # not ready by then: killed and restarted
    proc: Any = None  # subprocess.Popen while running
    started_mono: float = 0.0
    log_offset: int = 0  # where this start's output begins in its log
    healthy_since: float | None = None
    answering: bool | None = None
    unanswered: int = 0
    last_probe: float = 0.0
    restarts: int = 0
    exits: deque[float] = field(default_factory=deque)  # monotonic times of recent ends
    unhealthy_exits: int = 0  # ends in a row without having been healthy
    backoff: float = BACKOFF_MIN_S
    restart_at: float | None = None  # monotonic time of the next start while it is down
    last_exit: str = ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class CrashLoop(Exception):
    pass


def _http_ready(url: str) -> Callable[[Child], bool]:
    return lambda _child: is_up(url, timeout=2.0)


def _port_ready(port: int) -> Callable[[Child], bool]:
    def check(_child: Child) -> bool:
        with socket.socket() as s:
            s.settimeout(2.0)
            return s.connect_ex(("127.0.0.1", port)) == 0

    return check


def _logged_ready(log_path: Path, marker: bytes) -> Callable[[Child], bool]:
    """Ready once this start's log says `marker` (the relay when long polling has no port)."""
    return lambda child: logged_since(log_path, child.log_offset, marker)


class Supervisor:
    """Starts the children, restarts the ones that end or hang, reports their state."""

    def __init__(self, stack: Stack, children: list[Child], clock: Callable[[], float] = time.monotonic) -> None:
        self.stack, self.children, self.clock = stack, {c.name: c for c in children}, clock
        self._lock = threading.RLock()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe")

    @classmethod
    def for_stack(cls, stack: Stack) -> Supervisor:
        s = stack.settings
        children = [
            Child("actions", lambda: actions_command(s), _http_ready(f"{s.actions_url}/health"), s.actions_port),
            Child("rasa", lambda: rasa_command(s), _http_ready(f"{s.rasa_url}/webhooks/relay/"), s.rasa_port, start_deadline_s=240.0),
        ]
        if s.telegram_bot_token:
            if s.telegram_webhook_url:
                children.append(Child("relay", _relay_command, _port_ready(s.telegram_webhook_port), s.telegram_webhook_port))
            else:
                children.append(Child("relay", _relay_command, _logged_ready(stack.log_dir / "relay.log", RELAY_READY), None))
        clinic = Child("clinic", lambda: [sys.executable, "-m", "bot", "clinic"], _http_ready(f"{s.clinic_url}/health"), s.clinic_port)
        worker = Child("clinic-worker", clinic_worker_command, _http_ready(f"{s.clinic_worker_url}/health"), s.clinic_worker_port)
        return cls(stack, [*children, clinic, worker])

    # ------------------------------------------------------------------ processes
    def start(self, child: Child) -> subprocess.Popen:
        with self._lock:
            path = self.stack.log_dir / f"{child.name}.log"
            child.log_offset = path.stat().st_size if path.exists() else 0
            proc = child.proc = self.stack.spawn(child.name, child.command())
            child.started_mono, child.restart_at = self.clock(), None
            child.healthy_since, child.answering, child.unanswered, child.last_probe = None, None, 0, 0.0
            return proc

    def start_all(self) -> None:
        for child in self.children.values():
            self.start(child)

    def check(self) -> None:
        """Probe, notice ends and hangs, schedule and make restarts; raises CrashLoop."""
        self._probe()
        now = self.clock()
        with self._lock:
            for child in self.children.values():
                if child.proc is not None and child.proc.poll() is not None:
                    self._ended(child, describe_exit(child.proc.returncode), now)
                elif child.running:
                    self._watch(child, now)
                if child.proc is None and child.restart_at is not None and now >= child.restart_at:
                    child.restarts += 1
                    proc = self.start(child)
                    log.warning("supervisor.restarted process=%s restarts=%d pid=%s", child.name, child.restarts, proc.pid)

    def _probe(self) -> None:
        """Health checks, in parallel: every round while a process starts, every PROBE_EVERY_S once up."""
        now = self.clock()
        due = [
            c for c in self.children.values() if c.running and c.ready and (c.healthy_since is None or now - c.last_probe >= PROBE_EVERY_S)
        ]
        results = list(self._pool.map(lambda c: bool(c.ready(c)), due))
        with self._lock:
            for child, ok in zip(due, results, strict=True):
                child.last_probe, child.answering = now, ok
                if ok:
                    child.unanswered = 0
                    if child.healthy_since is None:
                        child.healthy_since = now
                        child.unhealthy_exits = 0
                        log.info("supervisor.ready process=%s after=%.1fs", child.name, now - child.started_mono)
                elif child.healthy_since is not None:
                    child.unanswered += 1

    def _watch(self, child: Child, now: float) -> None:
        if child.ready is None:
            child.healthy_since = child.healthy_since or now
        if child.healthy_since is not None and now - child.healthy_since >= STABLE_AFTER_S:
            child.backoff = BACKOFF_MIN_S
        hung = child.unanswered >= UNANSWERED_LIMIT
        late = child.healthy_since is None and now - child.started_mono > child.start_deadline_s
        if hung or late:
            why = f"not answering ({child.unanswered} checks)" if hung else f"not ready after {child.start_deadline_s:.0f} s"
            self.stack.stop_one(child.name, timeout=0)  # SIGKILL its group at once: a hung process may ignore SIGTERM
            self._ended(child, why, now)

    def _ended(self, child: Child, how: str, now: float) -> None:
        was_healthy = child.healthy_since is not None
        child.last_exit, child.proc, child.healthy_since, child.answering = how, None, None, None
        self.stack.procs.pop(child.name, None)
        child.exits.append(now)
        while child.exits and child.exits[0] < now - CRASH_WINDOW_S:
            child.exits.popleft()
        child.unhealthy_exits = 0 if was_healthy else child.unhealthy_exits + 1
        log_path = self.stack.log_dir / f"{child.name}.log"
        if len(child.exits) >= CRASH_LIMIT:
            raise CrashLoop(f"{child.name} ended {len(child.exits)} times within {CRASH_WINDOW_S:.0f} s (last: {how}); see {log_path}")
        if child.unhealthy_exits >= CRASH_LIMIT:
            raise CrashLoop(f"{child.name} ended {child.unhealthy_exits} times in a row before it was ready (last: {how}); see {log_path}")
        child.restart_at = now + child.backoff
        log.warning(
            "supervisor.exited process=%s how=%r restarts=%d next_start_in=%.0fs log=%s",
            child.name, how, child.restarts, child.backoff, log_path,
        )  # fmt: skip
        child.backoff = min(BACKOFF_MAX_S, child.backoff * 2)

    def stop_all(self) -> None:
        with self._lock:
            self.stack.stop_all(STOP_ORDER)
            for child in self.children.values():
                child.proc, child.restart_at = None, None

    # ------------------------------------------------------------------ status
    def status(self) -> dict[str, Any]:
        """Each process: state, pid, restarts, uptime, port and whether it answered its last check."""
        with self._lock:
            rows = {name: self._row(c) for name, c in self.children.items()}
        return {"healthy": all(r["state"] == "up" for r in rows.values()), "supervisor_pid": os.getpid(), "processes": rows}

    def _row(self, c: Child) -> dict[str, Any]:
        now = self.clock()
        running = c.running
        state = "down"
        if running:
            state = "up" if c.healthy_since is not None and c.unanswered == 0 else "not answering" if c.healthy_since else "starting"
        elif c.restart_at is not None:
            state = "restarting"
        return {
            "state": state,
            "pid": c.proc.pid if running and c.proc else None,
            "restarts": c.restarts,
            "uptime_s": round(now - c.started_mono, 1) if running else None,
            "port": c.port,
            "answering": c.answering if c.ready is not None and running else None,
            "last_exit": c.last_exit,
            "next_start_in_s": round(max(0.0, c.restart_at - now), 1) if c.restart_at is not None else None,
        }

    def wait_ready(self, stop: threading.Event, timeout: float = READY_TIMEOUT_S) -> bool:
        """True once every process answers (restarting the ones that end meanwhile); False on
        timeout or when asked to stop."""
        deadline = self.clock() + timeout
        while self.clock() < deadline and not stop.is_set():
            self.check()
            if self.status()["healthy"]:
                return True
            stop.wait(0.3)
        return False

    # ------------------------------------------------------------------ loop
    def run(self, status_port: int, on_ready: Callable[[], None] = lambda: None) -> int:
        """Supervise until a stop signal (0), a crash loop (1) or a port already taken (1)."""
        taken = [f"{c.name} port {c.port}" for c in self.children.values() if c.port and _listening(c.port)]
        if _listening(status_port):
            taken.append(f"status port {status_port}")
        if taken:
            sys.stderr.write(f"cannot start: already in use: {', '.join(taken)} (another `make run`? `ss -ltnp` shows who)\n")
            return 1
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(sig, lambda *_: stop.set())
        server = serve_status(self, status_port)
        try:
            self.start_all()
            if self.wait_ready(stop):
                on_ready()
            elif not stop.is_set():
                sys.stderr.write(f"not every process answers yet: {json.dumps(self.status()['processes'])}\n")
            while not stop.is_set():
                self.check()
                stop.wait(0.5)
            log.info("supervisor.stopping")
            return 0
        except CrashLoop as exc:
            sys.stderr.write(f"crash loop, stopping everything: {exc}\n")
            log.error("supervisor.crash_loop %s", exc)
            return 1
        finally:
            server.shutdown()
            self.stop_all()
            self._pool.shutdown(wait=False)


def _relay_command() -> list[str]:
    return [sys.executable, "-m", "bot", "relay"]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


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
    lines = [f"{'process':<9} {'state':<14} {'pid':>7} {'restarts':>8} {'uptime':>9}  port"]
    for name, r in status["processes"].items():
        uptime = f"{r['uptime_s']:.0f} s" if r["uptime_s"] is not None else "-"
        if r["port"]:
            port = f"{r['port']} " + {True: "answering", False: "NOT answering", None: "-"}[r["answering"]]
        else:
            port = "no port (long polling)" + (", ready" if r["state"] == "up" else "")
        extra = f"  last: {r['last_exit']}" if r["last_exit"] else ""
        if r["next_start_in_s"] is not None:
            extra += f", restarting in {r['next_start_in_s']:.0f} s"
        lines.append(f"{name:<9} {r['state']:<14} {r['pid'] or '-':>7} {r['restarts']:>8} {uptime:>9}  {port}{extra}")
    lines.append("healthy" if status["healthy"] else "NOT healthy")
    return "\n".join(lines)

"""The supervisor's rules on real (tiny) processes and a controlled clock: backoff, reset, crash
loops, hangs, stopping during start-up."""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import pytest

from bot.servers import Stack, isolated_settings
from bot.supervisor import (
    BACKOFF_MAX_S,
    CRASH_LIMIT,
    PROBE_EVERY_S,
    STABLE_AFTER_S,
    UNANSWERED_LIMIT,
    Child,
    CrashLoop,
    Supervisor,
    describe_exit,
    format_status,
)

EXIT_AT_ONCE = [sys.executable, "-c", "import sys; sys.exit(3)"]
STAY_UP = [sys.executable, "-c", "import time; time.sleep(60)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def supervisor(tmp_path: Path, command: list[str], clock: Clock, ready: object = None) -> Supervisor:
    stack = Stack(isolated_settings(tmp_path), log_dir=tmp_path)
    return Supervisor(stack, [Child("worker", lambda: command, ready, None)], clock=clock)  # type: ignore[arg-type]


def wait_exit(s: Supervisor) -> None:
    proc = s.children["worker"].proc
    assert proc is not None
    proc.wait(10)


def test_a_crashing_process_is_restarted_with_doubling_backoff_then_a_crash_loop_stops(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, EXIT_AT_ONCE, clock)
    s.start_all()
    waits = []
    with pytest.raises(CrashLoop, match=f"worker ended {CRASH_LIMIT} times"):
        for _ in range(CRASH_LIMIT + 1):
            wait_exit(s)
            s.check()  # notices the exit, schedules the restart
            child = s.children["worker"]
            assert child.proc is None and child.last_exit == "exit code 3"
            waits.append(child.restart_at - clock.now)  # type: ignore[operator]
            clock.now = child.restart_at  # type: ignore[assignment]
            s.check()  # restarts it
            assert child.proc is not None and child.restarts == len(waits)
    assert waits == [1.0, 2.0, 4.0, 8.0]
    s.stop_all()


def test_backoff_is_capped_and_reset_after_a_healthy_minute(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, STAY_UP, clock)
    s.start_all()
    s.check()
    child = s.children["worker"]
    child.backoff = BACKOFF_MAX_S * 4
    child.proc.send_signal(signal.SIGKILL)
    wait_exit(s)
    s.check()
    assert child.restart_at == clock.now + BACKOFF_MAX_S * 4 and child.backoff == BACKOFF_MAX_S and child.last_exit == "signal SIGKILL"
    clock.now = child.restart_at  # type: ignore[assignment]
    s.check()  # restarted
    s.check()  # healthy from now
    clock.now += STABLE_AFTER_S
    s.check()
    assert child.backoff == 1.0, "healthy a minute: the next crash restarts after 1 s again"
    s.stop_all()


def test_ends_spread_over_more_than_two_minutes_after_being_healthy_are_no_crash_loop(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, STAY_UP, clock)
    s.start_all()
    for _ in range(CRASH_LIMIT * 2):
        s.check()  # up and healthy
        s.children["worker"].proc.send_signal(signal.SIGKILL)
        wait_exit(s)
        s.check()
        clock.now += 60  # one end a minute
        s.check()
    assert s.children["worker"].restarts == CRASH_LIMIT * 2
    s.stop_all()


def test_a_process_that_never_gets_ready_is_a_crash_loop_however_slowly_it_dies(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, EXIT_AT_ONCE, clock, ready=lambda child: False)
    s.start_all()
    with pytest.raises(CrashLoop, match="in a row before it was ready"):
        for _ in range(CRASH_LIMIT + 1):
            wait_exit(s)
            s.check()
            clock.now += 300  # far apart: the two-minute window alone would never call it a loop
            s.check()


def test_a_hung_process_is_killed_after_three_unanswered_checks_and_restarted(tmp_path: Path) -> None:
    clock = Clock()
    answers = {"ok": True}
    s = supervisor(tmp_path, STAY_UP, clock, ready=lambda child: answers["ok"])
    s.start_all()
    s.check()
    child = s.children["worker"]
    first_pid = child.proc.pid
    assert s.status()["processes"]["worker"]["state"] == "up"
    answers["ok"] = False  # its event loop hangs: the process lives, nothing answers
    for n in range(UNANSWERED_LIMIT):
        clock.now += PROBE_EVERY_S
        s.check()
        if n < UNANSWERED_LIMIT - 1:
            assert child.proc is not None and s.status()["processes"]["worker"]["state"] == "not answering"
    assert child.proc is None and child.last_exit == f"not answering ({UNANSWERED_LIMIT} checks)"
    answers["ok"] = True
    clock.now += 1
    s.check()
    assert child.proc is not None and child.proc.pid != first_pid and child.restarts == 1
    s.stop_all()


def test_a_stop_signal_during_start_up_is_not_kept_waiting(tmp_path: Path) -> None:
    s = supervisor(tmp_path, STAY_UP, Clock(), ready=lambda child: False)
    s.start_all()
    stop = threading.Event()
    stop.set()
    assert s.wait_ready(stop, timeout=10**6) is False
    s.stop_all()
    assert s.children["worker"].proc is None


def test_status_reports_each_process(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, STAY_UP, clock)
    s.start_all()
    s.check()
    clock.now += 42
    status = s.status()
    row = status["processes"]["worker"]
    assert status["healthy"] and row["state"] == "up" and row["pid"] and row["uptime_s"] == 42.0
    assert "worker" in format_status(status) and format_status(status).endswith("healthy")
    s.stop_all()
    assert s.status()["processes"]["worker"]["state"] == "down" and not s.status()["healthy"]


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "exit code 0" and describe_exit(-9) == "signal SIGKILL" and describe_exit(-15) == "signal SIGTERM"

"""The supervisor's rules on real (tiny) processes and a controlled clock: backoff, reset, crash loop."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from bot.servers import Stack, isolated_settings
from bot.supervisor import BACKOFF_MAX_S, CRASH_LIMIT, STABLE_AFTER_S, Child, CrashLoop, Supervisor, describe_exit, format_status

EXIT_AT_ONCE = [sys.executable, "-c", "import sys; sys.exit(3)"]
STAY_UP = [sys.executable, "-c", "import time; time.sleep(60)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def supervisor(tmp_path: Path, command: list[str], clock: Clock) -> Supervisor:
    stack = Stack(isolated_settings(tmp_path), log_dir=tmp_path)
    return Supervisor(stack, [Child("worker", lambda: command, None, None)], clock=clock)


def wait_exit(s: Supervisor) -> None:
    proc = s.children["worker"].proc
    assert proc is not None
    proc.wait(10)


def test_a_crashing_process_is_restarted_with_doubling_backoff_then_a_crash_loop_stops(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, EXIT_AT_ONCE, clock)
    s.start_all()
    waits = []
    with pytest.raises(CrashLoop, match=f"worker exited {CRASH_LIMIT} times"):
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


def test_backoff_is_capped_and_reset_after_a_stable_minute(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, STAY_UP, clock)
    s.start_all()
    child = s.children["worker"]
    child.backoff = BACKOFF_MAX_S * 4
    child.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    wait_exit(s)
    s.check()
    assert child.restart_at == clock.now + BACKOFF_MAX_S * 4 and child.backoff == BACKOFF_MAX_S and child.last_exit == "signal SIGKILL"
    clock.now = child.restart_at  # type: ignore[assignment]
    s.check()
    clock.now += STABLE_AFTER_S
    s.check()
    assert child.backoff == 1.0, "up a minute: the next crash restarts after 1 s again"
    s.stop_all()


def test_exits_spread_over_more_than_two_minutes_are_no_crash_loop(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, EXIT_AT_ONCE, clock)
    s.start_all()
    for _ in range(CRASH_LIMIT * 2):
        wait_exit(s)
        s.check()
        clock.now += 60  # one exit a minute
        s.check()
        s.children["worker"].backoff = 1.0
    assert s.children["worker"].restarts == CRASH_LIMIT * 2
    s.stop_all()


def test_status_reports_each_process(tmp_path: Path) -> None:
    clock = Clock()
    s = supervisor(tmp_path, STAY_UP, clock)
    s.start_all()
    clock.now += 42
    status = s.status()
    row = status["processes"]["worker"]
    assert status["healthy"] and row["state"] == "up" and row["pid"] and row["uptime_s"] == 42.0 and row["answering"] is None
    assert "worker" in format_status(status) and "healthy" in format_status(status)
    s.stop_all()
    assert s.status()["processes"]["worker"]["state"] == "down" and not s.status()["healthy"]


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "exit code 0" and describe_exit(-9) == "signal SIGKILL" and describe_exit(-15) == "signal SIGTERM"

"""Start, probe and stop the action server and the Rasa server as child processes.

Used by `make run`, `make eval` and the integration tests, so all three run the product the
same way: REST channel on, HTTP API on with a token, bound to 127.0.0.1, SQL tracker store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from starlette.datastructures import Secret

from bot import PROJECT_ROOT
from bot.model_check import check_model
from bot.settings import ENV_VARIABLES, MODEL_PATH, Settings, load_settings

RASA = str(Path(sys.executable).with_name("rasa"))


def child_env(settings: Settings) -> dict[str, str]:
    """The environment of a child process: exactly `settings`, whatever this process inherited.

    Every variable the settings read is first removed, and `.env` is not read by the child: an
    alert webhook or chat id set in the shell or `.env` of whoever starts an evaluation must not
    reach its throw-away stack (it would page the care team for every emergency case)."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_VARIABLES}
    env.update(settings.as_env(), CRS_ENV_FILE="")  # every setting is here: no `.env` adds one
    env.update(
        PYTHONPATH=str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        TF_CPP_MIN_LOG_LEVEL="3",
        SQLALCHEMY_SILENCE_UBER_WARNING="1",
        # Sanic's per-request access log (Rasa and action server): it cost ~3 % of each server's
        # time and writes conversation ids to the log; errors are still logged.
        SANIC_ACCESS_LOG="false",
    )
    # rasa_sdk's action server listens on $SANIC_HOST, 0.0.0.0 unless told: only Rasa, beside
    # it, may call it (it has no authentication of its own).
    env.setdefault("SANIC_HOST", "127.0.0.1")
    return env


def actions_command(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "bot", "actions", "--actions", "actions", "--port", str(settings.actions_port)]


def clinic_worker_command() -> list[str]:
    return [sys.executable, "-m", "bot", "clinic-worker"]


def rasa_command(settings: Settings, model: Path = MODEL_PATH) -> list[str]:
    """`python -m bot rasa run …`: the model is checked first, and the API token is handed to Rasa
    from $RASA_API_TOKEN inside the process, so it never shows in the process list."""
    return [
        sys.executable,
        "-m",
        "bot",
        "rasa",
        "run",
        "--model",
        str(model),
        "--enable-api",
        "--interface",
        "127.0.0.1",
        "--port",
        str(settings.rasa_port),
        "--endpoints",
        str(PROJECT_ROOT / "endpoints.yml"),
        "--credentials",
        str(PROJECT_ROOT / "credentials.yml"),
    ]


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now (tests, benchmarks)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def isolated_settings(directory: Path, **overrides: object) -> Settings:
    """Settings for a private stack (tests, benchmarks): its own SQLite file and relay outbox in
    `directory`, spare ports, the project's API token; `overrides` replace any field."""
    base = load_settings()
    settings = Settings(
        database_url=f"sqlite:///{directory / 'tracker.db'}",
        rasa_port=free_port(),
        actions_port=free_port(),
        clinic_port=free_port(),
        rasa_api_token=base.rasa_api_token,
        telegram_bot_token=None,
        relay_outbox_path=directory / "outbox.db",
        sender_id_key=Secret(f"isolated-{directory.name}"),
        clinic_secret_key=Secret(f"isolated-clinic-{directory.name}"),
        status_port=free_port(),
        clinic_worker_port=free_port(),
        log_dir=directory,
    )
    return dataclasses.replace(settings, **overrides)  # type: ignore[arg-type]


RELAY_READY = b"relay.ready"  # the relay logs it once it takes updates (bot/telegram/app.py)


def logged_since(log_path: Path, offset: int, marker: bytes) -> bool:
    """Whether a process's log says `marker` after `offset` (where this start's output begins)."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            return marker in log.read()
    except OSError:
        return False


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the whole group is gone already
        os.killpg(proc.pid, sig)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG survives exec)."""
    import ctypes

    ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def is_up(url: str, timeout: float = 1.0) -> bool:
    try:
        return requests.get(url, timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def wait_until_up(url: str, proc: subprocess.Popen | None, timeout: float, what: str) -> float:
    """Seconds until `url` answers 200; raises if the process died or time ran out."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if is_up(url):
            return time.monotonic() - start
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode} before it was ready")
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready at {url} after {timeout:.0f} s")


@dataclass
class Stack:
    """The action server and Rasa server started by us (stopped again by `stop`)."""

    settings: Settings
    log_dir: Path = PROJECT_ROOT / "var" / "log"
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    # The children get SIGTERM when the process that started them dies, however it dies (SIGKILL,
    # the OOM killer): `make run`'s supervisor sets it, so no orphan keeps a port. Only for
    # processes started from a thread that lives as long as they should (Linux ties it to the thread).
    die_with_parent: bool = False

    def spawn(self, name: str, cmd: list[str]) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the process
        proc = subprocess.Popen(
            cmd, cwd=PROJECT_ROOT, env=child_env(self.settings), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,  # noqa: PLW1509 - async-signal-safe: one prctl call
        )  # fmt: skip
        self.procs[name] = proc
        return proc

    def start_actions(self, timeout: float = 60) -> float:
        proc = self.spawn("actions", actions_command(self.settings))
        return wait_until_up(f"{self.settings.actions_url}/health", proc, timeout, "action server")

    def start_rasa(self, timeout: float = 120) -> float:
        check_model(MODEL_PATH)  # a missing or damaged model: refuse, do not serve a half-working bot
        proc = self.spawn("rasa", rasa_command(self.settings))
        return wait_until_up(f"{self.settings.rasa_url}/", proc, timeout, "Rasa server")

    def start_relay(self, timeout: float = 60) -> float:
        """The Telegram relay (`python -m bot relay`); ready when it logs `relay.ready`."""
        log_path = self.log_dir / "relay.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        proc = self.spawn("relay", [sys.executable, "-m", "bot", "relay"])
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if logged_since(log_path, offset, RELAY_READY):
                return time.monotonic() - start
            if proc.poll() is not None:
                raise RuntimeError(f"Telegram relay exited with code {proc.returncode} before it was ready")
            time.sleep(0.2)
        raise TimeoutError(f"Telegram relay not ready after {timeout:.0f} s")

    def start_clinic_worker(self, timeout: float = 60) -> float:
        """The clinic's background work (`python -m bot clinic-worker`), ready when its /health says
        a first round is done (200 comes only after one)."""
        proc = self.spawn("clinic-worker", clinic_worker_command())
        return wait_until_up(f"{self.settings.clinic_worker_url}/health", proc, timeout, "clinic worker")

    def start_clinic(self, timeout: float = 60, worker: bool = True) -> float:
        """The clinic review app (`python -m bot clinic`), ready when its login page answers, and,
        unless one is running already, its worker (`start_clinic_worker`)."""
        waited = 0.0
        running = self.procs.get("clinic-worker")
        if worker and (running is None or running.poll() is not None):
            waited = self.start_clinic_worker(timeout)
        proc = self.spawn("clinic", [sys.executable, "-m", "bot", "clinic"])
        return waited + wait_until_up(f"{self.settings.clinic_url}/login", proc, timeout, "clinic app")

    def start(self) -> dict[str, float]:
        return {"actions": self.start_actions(), "rasa": self.start_rasa()}

    def stop_one(self, name: str, timeout: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None:
            return
        _signal_group(proc, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
        _signal_group(proc, signal.SIGKILL)  # whatever is left of its group (a grandchild holding a port)
        proc.wait()

    def stop_all(self, order: list[str], timeout: float = 45) -> None:
        """SIGTERM to every process at once (in `order`, the rest after), then one shared deadline."""
        names = [n for n in order if n in self.procs] + [n for n in self.procs if n not in order]
        procs = [self.procs.pop(n) for n in names]
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            _signal_group(proc, signal.SIGKILL)
            proc.wait()

    def kill(self, name: str) -> None:
        """SIGKILL, as a crash or the OOM killer would: no clean-up runs (fault tests)."""
        proc = self.procs.pop(name)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self) -> None:
        for name in list(self.procs):
            self.stop_one(name)

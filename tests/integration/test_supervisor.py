"""`make run` stays up when one part dies: the real `make run`, the relay on the fake Bot API.

Each of the five processes is SIGKILLed in turn (what the out-of-memory killer does) while two
patients write, one of them an emergency. Every message gets an answer (the fail-safe counts;
an emergency's says 911), the killed process is back and answering within 30 s, and every
message is stored exactly once. A crash loop ends `make run` non-zero, saying why.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from starlette.datastructures import Secret

from bot import PROJECT_ROOT
from bot.servers import child_env, isolated_settings
from bot.settings import Settings
from tests.integration.conftest import BOT_TOKEN, wait_until
from tools.fake_bot_api import FakeTelegram

pytestmark = pytest.mark.integration
MAKE = shutil.which("make") or "make"
RELAY_TIMEOUT_S = 4.0
BACK_WITHIN_S = 30.0
BENIGN, EMERGENCY = 5001, 5002  # chat ids
FILLER = " ".join(f"We drove back from the clinic on day {n} and had soup with my sister." for n in range(60))


@dataclass
class Product:
    settings: Settings
    proc: subprocess.Popen
    fake: FakeTelegram
    log: Path

    def status(self) -> dict:
        return requests.get(f"http://127.0.0.1:{self.settings.status_port}/status", timeout=10).json()


def start_make_run(tmp: Path, fake: FakeTelegram | None, **overrides: object) -> tuple[Settings, subprocess.Popen, Path]:
    extra: dict[str, object] = {"relay_rasa_timeout": RELAY_TIMEOUT_S, "sender_id_key": Secret("supervisor-test-key")}
    if fake is not None:
        extra.update(telegram_bot_token=Secret(BOT_TOKEN), telegram_api_base_url=fake.base_url)
    settings = isolated_settings(tmp, **{**extra, **overrides})
    log = tmp / "make-run.log"
    proc = subprocess.Popen(
        [MAKE, "-s", "run"], cwd=PROJECT_ROOT, env=child_env(settings), stdout=open(log, "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True,
    )  # fmt: skip
    return settings, proc, log


@pytest.fixture
def product(tmp_path: Path) -> Iterator[Product]:
    fake = FakeTelegram(token=BOT_TOKEN).start()
    settings, proc, log = start_make_run(tmp_path, fake)
    p = Product(settings, proc, fake, log)
    try:
        wait_until(lambda: _healthy(p), timeout=180, what="make run healthy")
        yield p
    finally:
        leftovers = []
        with contextlib.suppress(requests.RequestException, ValueError):
            leftovers = [r["pid"] for r in p.status()["processes"].values() if r["pid"]]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        for pid in leftovers:  # a failed test must not leave servers on the 2 cores for the rest of the run
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        fake.stop()


def _healthy(p: Product) -> bool:
    assert p.proc.poll() is None, p.log.read_text()[-3000:]
    try:
        return bool(p.status()["healthy"])
    except requests.RequestException:
        return False


def stored_user_texts(settings: Settings) -> list[str]:
    db = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
    try:
        rows = db.execute("select data from events where type_name = 'user'").fetchall()
    finally:
        db.close()
    import json

    return [json.loads(r[0]).get("text", "") for r in rows]


def test_each_part_killed_in_turn_while_patients_write(product: Product) -> None:
    fake, sent_texts = product.fake, []

    def write(chat: int, text: str) -> int:
        before = len(fake.sent(chat))
        fake.push_text(chat, text)
        sent_texts.append(text)
        return before

    for name in ("actions", "rasa", "relay", "clinic", "clinic-worker"):
        old = product.status()["processes"][name]
        assert old["state"] == "up" and old["pid"], old
        benign = write(BENIGN, f"I have a mild headache ({name})")
        # a long message keeps Rasa busy for a moment: the kill lands while it is being handled
        emergency = write(EMERGENCY, f"my lips are blue and I can't breathe ({name}). " + FILLER)
        time.sleep(0.05)
        os.kill(old["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        # the relay itself killed: the message waits at Telegram (or in its inbox) until it is back;
        # any other part: the relay's deadline holds, with a fail-safe if need be
        limit = RELAY_TIMEOUT_S + 6 + (BACK_WITHIN_S if name == "relay" else 0)
        fake.wait_for(BENIGN, lambda s: bool(s.params.get("text")), timeout=limit, after=benign)
        fake.wait_for(EMERGENCY, lambda s: "911" in str(s.params.get("text")), timeout=limit, after=emergency)

        def back(name: str = name, old: dict = old) -> bool:
            row = product.status()["processes"][name]
            return row["state"] == "up" and row["pid"] not in (None, old["pid"]) and row["restarts"] == old["restarts"] + 1

        wait_until(back, timeout=BACK_WITHIN_S - (time.monotonic() - killed_at), what=f"{name} back within {BACK_WITHIN_S:.0f} s")
        sys.stdout.write(f"{name}: back and answering {time.monotonic() - killed_at:.1f} s after SIGKILL\n")  # shown with -s
        # after the restart, a real answer again
        again = write(EMERGENCY, f"still can't breathe, lips blue ({name} back)")
        fake.wait_for(EMERGENCY, lambda s: "911" in str(s.params.get("text")), timeout=RELAY_TIMEOUT_S + 10, after=again)

    restarts = {n: r["restarts"] for n, r in product.status()["processes"].items()}
    assert restarts == {"actions": 1, "rasa": 1, "relay": 1, "clinic": 1, "clinic-worker": 1}, "each restarted once, nothing else died"

    def all_stored() -> bool:
        stored = stored_user_texts(product.settings)
        return all(t in stored for t in sent_texts)

    wait_until(all_stored, timeout=60, what="every message stored (parked ones delivered)")
    stored = stored_user_texts(product.settings)
    assert {t: stored.count(t) for t in sent_texts} == {t: 1 for t in sent_texts}, "nothing lost, nothing stored twice"
    log = product.log.read_text()
    for name in ("actions", "rasa", "relay", "clinic", "clinic-worker"):
        assert f"supervisor.exited process={name} how='signal SIGKILL' restarts=0" in log, log[-2000:]

    status = subprocess.run([MAKE, "-s", "status"], cwd=PROJECT_ROOT, env=child_env(product.settings), capture_output=True, text=True)
    assert status.returncode == 0 and status.stdout.rstrip().endswith("healthy") and "clinic" in status.stdout, status.stdout
    children = [r["pid"] for r in product.status()["processes"].values()]
    os.killpg(product.proc.pid, signal.SIGINT)  # Ctrl-C in the terminal running `make run`: everything stops cleanly
    product.proc.wait(60)
    assert "supervisor.stopping" in product.log.read_text()
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_crash_loop_ends_make_run_with_a_clear_message(tmp_path: Path) -> None:
    fake = FakeTelegram(token=BOT_TOKEN).start()  # it refuses the relay's token: the relay exits at every start
    try:
        settings, proc, log = start_make_run(tmp_path, fake, telegram_bot_token=Secret("999:revoked-token"))
        try:
            code = proc.wait(timeout=150)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    finally:
        fake.stop()
    output = log.read_text()
    assert code != 0, output[-2000:]
    assert "crash loop, stopping everything: relay ended 5 times" in output, output[-2000:]
    assert "how='exit code 1' restarts=3 next_start_in=8s" in output, "restarted with doubling backoff first"
    assert not _listening(settings.rasa_port) and not _listening(settings.clinic_port), "everything stopped"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

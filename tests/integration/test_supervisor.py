"""`make run` stays up when one part dies: the real `make run`, the relay on the fake Bot API.

Each of the four processes is SIGKILLed in turn (what the out-of-memory killer does) while two
patients write, one of them an emergency. Every message gets an answer (the fail-safe counts;
an emergency's says 911), the killed process is back and answering within 30 s, and every
message is stored exactly once. A crash loop ends `make run` non-zero, saying why.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
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
from bot.telegram.fake_api import FakeTelegram
from tests.integration.conftest import BOT_TOKEN, wait_until

pytestmark = pytest.mark.integration
MAKE = shutil.which("make") or "make"
RELAY_TIMEOUT_S = 4.0
BACK_WITHIN_S = 30.0
BENIGN, EMERGENCY = 5001, 5002  # chat ids


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
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
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

    def write(chat: int, text: str) -> tuple[int, float]:
        before = len(fake.sent(chat))
        fake.push_text(chat, text)
        sent_texts.append(text)
        return before, time.monotonic()

    for name in ("actions", "rasa", "relay", "clinic"):
        old = product.status()["processes"][name]
        assert old["state"] == "up" and old["pid"], old
        os.kill(old["pid"], signal.SIGKILL)
        killed_at = time.monotonic()
        asked = {
            chat: write(chat, text)
            for chat, text in ((BENIGN, f"I have a mild headache ({name})"), (EMERGENCY, f"my lips are blue and I can't breathe ({name})"))
        }
        # the relay itself down: the message waits at Telegram until it is back; every other part: the relay's deadline holds
        limit = RELAY_TIMEOUT_S + 6 + (BACK_WITHIN_S if name == "relay" else 0)
        for chat, (before, _at) in asked.items():
            fake.wait_for(chat, lambda s: bool(s.params.get("text")), timeout=limit, after=before)  # raises if none in time
            if chat == EMERGENCY:
                emergency_replies = [s.params["text"] for s in fake.sent(EMERGENCY)[before:]]
                assert any("911" in t for t in emergency_replies), (name, emergency_replies)

        def back(name: str = name, old: dict = old) -> bool:
            row = product.status()["processes"][name]
            return row["state"] == "up" and row["pid"] not in (None, old["pid"]) and row["restarts"] == old["restarts"] + 1

        wait_until(back, timeout=BACK_WITHIN_S - (time.monotonic() - killed_at), what=f"{name} back within {BACK_WITHIN_S:.0f} s")
        others = {n: r for n, r in product.status()["processes"].items() if n != name}
        assert all(r["restarts"] == 0 or n in ("actions", "rasa", "relay") for n, r in others.items()), others
        # after the restart, a real answer again
        before, _ = write(EMERGENCY, f"still can't breathe, lips blue ({name} back)")
        fake.wait_for(EMERGENCY, lambda s: "911" in str(s.params.get("text")), timeout=RELAY_TIMEOUT_S + 10, after=before)

    restarts = {n: r["restarts"] for n, r in product.status()["processes"].items()}
    assert restarts == {"actions": 1, "rasa": 1, "relay": 1, "clinic": 1}, "each restarted once, nothing else died"

    def all_stored_once() -> bool:
        stored = stored_user_texts(product.settings)
        return all(stored.count(t) >= 1 for t in sent_texts)

    wait_until(all_stored_once, timeout=60, what="every message stored (parked ones delivered)")
    stored = stored_user_texts(product.settings)
    assert {t: stored.count(t) for t in sent_texts} == {t: 1 for t in sent_texts}, "nothing lost, nothing stored twice"
    log = product.log.read_text()
    for name in ("actions", "rasa", "relay", "clinic"):
        assert f"supervisor.exited process={name} how='signal SIGKILL' restarts=0" in log, log[-2000:]

    status = subprocess.run([MAKE, "-s", "status"], cwd=PROJECT_ROOT, env=child_env(product.settings), capture_output=True, text=True)
    assert status.returncode == 0 and "healthy" in status.stdout and "clinic" in status.stdout, status.stdout
    children = [r["pid"] for r in product.status()["processes"].values()]
    os.kill(product.status()["supervisor_pid"], signal.SIGTERM)  # Ctrl-C / systemd stop: everything stops cleanly
    assert product.proc.wait(60) == 0
    for pid in children:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_a_crash_loop_ends_make_run_with_a_clear_message(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the action server's port is taken: it exits at every start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings, proc, log = start_make_run(tmp_path, None, actions_port=taken.getsockname()[1])
        try:
            code = proc.wait(timeout=150)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    output = log.read_text()
    assert code != 0, output[-2000:]
    assert "crash loop" in output and "actions exited 5 times" in output, output[-2000:]
    assert not _listening(settings.rasa_port) and not _listening(settings.clinic_port), "everything stopped"


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0

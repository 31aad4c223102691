"""Faults injected into the real processes: the patient still gets a safe reply, nothing is lost.

Each test breaks one part on purpose (SIGKILL, a locked, full or stopped database, a
damaged model), checks the replies patients got meanwhile and the process state, restores the
part, then checks the stored rows.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import sqlalchemy as sa

from bot import PROJECT_ROOT
from bot.model_check import ModelError, check_model
from bot.servers import Stack, isolated_settings
from bot.settings import MODEL_PATH
from tests.integration.conftest import BOT_TOKEN, RelayRig, relay_settings, wait_until
from tools.benchmarks.chaos import fill
from tools.evaluate import RestClient
from tools.fake_bot_api import FakeTelegram, Sent
from tools.pgcluster import PgCluster

pytestmark = pytest.mark.integration
_chats = itertools.count(60_000)


def texts(replies: list[dict]) -> str:
    return "\n".join(r.get("text", "") for r in replies)


def sender() -> str:
    return f"fault-{uuid.uuid4().hex[:8]}"


def user_texts(url: str, sender_id: str) -> list[str]:
    """The patient messages stored for one conversation, in order, read from the database itself."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            rows = c.execute(
                sa.text("SELECT data FROM events WHERE sender_id = :s AND type_name = 'user' ORDER BY id"), {"s": sender_id}
            ).scalars()
            return [json.loads(d)["text"] for d in rows]
    finally:
        engine.dispose()


def event_rows(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as c:
            return int(c.execute(sa.text("SELECT count(*) FROM events")).scalar_one())
    finally:
        engine.dispose()


def has_911(call: Sent) -> bool:
    return "911" in call.params.get("text", "")


def log_text(stack: Stack, name: str) -> str:
    return (stack.log_dir / f"{name}.log").read_text(errors="replace")


# ---------------------------------------------------------------------- the action server
def test_action_server_killed_mid_conversation(stack: Stack, client: RestClient) -> None:
    sid = sender()
    client.send(sid, "I had Kymriah 2 days ago")
    assert "care team" in texts(client.send(sid, "I have a headache"))
    stack.kill("actions")
    try:
        emergency = texts(client.send(sid, "now I can't breathe"))
        assert "911" in emergency and "emergency" in emergency.lower()
        other = texts(client.send(sender(), "I feel a bit tired"))
        assert "911" in other and "care team" in other, "the emergency signs and whom to contact"
        assert stack.procs["rasa"].poll() is None
    finally:
        stack.start_actions()
    # back: the message answered by the fail-safe is part of the triage
    answer = texts(client.send(sid, "and I feel sick to my stomach"))
    assert "911" in answer
    slots = client.tracker(sid)["slots"]
    assert slots["triage_level"] == "emergency"
    assert {"headache", "difficulty_breathing", "nausea"} <= set(slots["symptoms"])
    assert slots["untriaged"] == []
    assert user_texts(stack.settings.database_url, sid) == [
        "I had Kymriah 2 days ago",
        "I have a headache",
        "now I can't breathe",
        "and I feel sick to my stomach",
    ]


# ---------------------------------------------------------------------- the Rasa server
def test_rasa_killed_under_load_loses_nothing(relay: RelayRig, stack: Stack) -> None:
    url = stack.settings.database_url
    done_chat = next(_chats)
    relay.fake.push_text(done_chat, "I had Tecvayli last week")
    relay.fake.wait_sent(done_chat, 1)
    wait_until(lambda: len(user_texts(url, relay.sender(done_chat))) == 1, what="first conversation stored")
    done_rows = len(relay.tracker(done_chat)["events"])
    chats = [next(_chats) for _ in range(3)]
    script = ["hello", "I have a fever of 38.5", "now my lips look blue", "and I feel confused", "thanks"]
    sent_at: dict[int, float] = {}

    def patients() -> None:
        for line in script:
            for chat in chats:
                relay.fake.push_text(chat, line)
                sent_at[chat] = time.monotonic()
            time.sleep(0.7)

    writer = threading.Thread(target=patients)
    writer.start()
    time.sleep(1.0)  # some messages answered, some in flight
    stack.kill("rasa")
    try:
        writer.join()
        for chat in chats:  # every message got an answer while Rasa was dead: a fail-safe at least
            relay.fake.wait_sent(chat, len(script), timeout=relay.settings.relay_rasa_timeout * len(script) + 10)
    finally:
        stack.start_rasa()
    for chat in chats:
        wait_until(lambda chat=chat: user_texts(url, relay.sender(chat)) == script, timeout=60, what=f"chat {chat} stored once, in order")
        assert relay.tracker(chat)["slots"]["triage_level"] == "emergency"
    assert len(relay.tracker(done_chat)["events"]) == done_rows, "a finished conversation is untouched"


def test_a_damaged_or_missing_model_is_refused(tmp_path: Path) -> None:
    check_model(MODEL_PATH)  # the real one passes
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(MODEL_PATH.read_bytes()[: MODEL_PATH.stat().st_size // 2])
    garbage = tmp_path / "garbage.tar.gz"
    garbage.write_bytes(b"not a model at all" * 100)
    hollow = tmp_path / "hollow.tar.gz"
    with tarfile.open(MODEL_PATH) as full, tarfile.open(hollow, "w:gz") as out:
        for member in full:
            if not member.name.endswith("metadata.json"):
                out.addfile(member, full.extractfile(member) if member.isfile() else None)
    cases = {
        tmp_path / "absent.tar.gz": "no trained model",
        truncated: "damaged",
        garbage: "damaged",
        hollow: "not a Rasa model",
    }
    for path, words in cases.items():
        with pytest.raises(ModelError, match=words):
            check_model(path)
        # the Rasa server's entrypoint refuses too, at once and with the reason
        started = time.monotonic()
        run = subprocess.run(
            [sys.executable, "-m", "bot", "rasa", "run", "--model", str(path), "--port", "1"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 2, run.stderr
        assert "refusing to start the Rasa server" in run.stderr and words in run.stderr
        assert time.monotonic() - started < 60


def test_make_run_refuses_a_damaged_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    damaged = tmp_path / "crs.tar.gz"
    damaged.write_bytes(MODEL_PATH.read_bytes()[:1000])
    monkeypatch.setattr("bot.servers.MODEL_PATH", damaged)
    stack = Stack(isolated_settings(tmp_path), log_dir=tmp_path)
    with pytest.raises(ModelError, match="damaged"):
        stack.start_rasa()
    assert "rasa" not in stack.procs, "nothing was started"


# ---------------------------------------------------------------------- the tracker database
@dataclass
class FaultRig:
    """A private stack whose tracker database sits on its own small filesystem (tmpfs)."""

    stack: Stack
    relay: RelayRig
    mount: Path

    @property
    def url(self) -> str:
        return self.stack.settings.database_url

    def sender(self, chat: int) -> str:
        return self.relay.sender(chat)


MOUNT, UMOUNT = shutil.which("mount") or "mount", shutil.which("umount") or "umount"


def _mount(path: Path, options: str) -> bool:
    return subprocess.run([MOUNT, "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode == 0


@contextlib.contextmanager
def private_rig(database_url: str, tmp: Path, mount: Path) -> Iterator[FaultRig]:
    """Action server, Rasa server and relay of their own on `database_url`, with a fake Bot API."""
    fake = FakeTelegram(token=BOT_TOKEN).start()
    stack = Stack(isolated_settings(tmp, database_url=database_url), log_dir=tmp)
    relay_stack = None
    try:
        stack.start()
        relay_conf = relay_settings(stack, fake, tmp)
        relay_stack = Stack(relay_conf, log_dir=tmp)
        relay_stack.start_relay()
        yield FaultRig(stack, RelayRig(fake, relay_stack, relay_conf), mount)
    finally:
        if relay_stack is not None:
            relay_stack.stop()
        stack.stop()
        fake.stop()


@pytest.fixture(scope="module")
def fault_rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultRig]:
    mount = tmp_path_factory.mktemp("dbfs")
    if not _mount(mount, "size=24m"):
        pytest.skip("mounting a small tmpfs needs root (CAP_SYS_ADMIN): the disk-full and locked-database tests need it")
    try:
        with private_rig(f"sqlite:///{mount / 'tracker.db'}", tmp_path_factory.mktemp("faults"), mount) as rig:
            yield rig
    finally:
        subprocess.run([UMOUNT, "-l", str(mount)], capture_output=True)


def _broken_then_restored(rig: FaultRig, lines: list[str], break_it, restore, hint: str, readable: bool = True) -> None:  # noqa: ANN001
    """Break the database, have one patient write, check fail-safes and the log, restore, check rows."""
    chat = next(_chats)
    fake = rig.relay.fake
    fake.push_text(chat, "hi")
    fake.wait_sent(chat, 1)
    wait_until(lambda: user_texts(rig.url, rig.sender(chat)) == ["hi"], what="first message stored")
    log_offset = len(log_text(rig.stack, "rasa"))
    break_it()
    try:
        for k, line in enumerate(lines, start=2):
            t0 = time.monotonic()
            fake.push_text(chat, line)
            reply = fake.wait_sent(chat, k, timeout=rig.relay.settings.relay_rasa_timeout + 10)[k - 1]
            assert "911" in reply.params["text"], "the fail-safe names the emergency signs and 911"
            assert time.monotonic() - t0 < rig.relay.settings.relay_rasa_timeout + 5
        wait_until(lambda: hint in log_text(rig.stack, "rasa")[log_offset:], timeout=40, what=f"'{hint}' in the Rasa log")
        probe = {"sender": "rest-probe", "message": "hi"}
        rest = requests.post(f"{rig.stack.settings.rasa_url}/webhooks/rest/webhook", json=probe, timeout=60)
        assert rest.status_code == 500 and rest.json()["error"], "the REST channel says it failed instead of an empty 200"
        logged = log_text(rig.stack, "rasa")[log_offset:]
        assert not [line for line in lines if line in logged], "the error log carries no message text (bound parameters hidden)"
        assert rig.stack.procs["rasa"].poll() is None and rig.stack.procs["actions"].poll() is None, "no crash"
        if readable:  # (a stopped server cannot be read either)
            assert user_texts(rig.url, rig.sender(chat)) == ["hi"], "nothing stored while the database fails"
    finally:
        restore()
    wait_until(lambda: user_texts(rig.url, rig.sender(chat)) == ["hi", *lines], timeout=90, what="held messages stored in order, once")
    late = fake.wait_for(chat, lambda c: has_911(c) and c.params.get("reply_parameters") is not None, timeout=30)
    assert late.params["reply_parameters"]["message_id"] > 0, "the real answer follows, threaded to the message"
    assert rig.stack.procs["rasa"].poll() is None


def test_disk_full(fault_rig: FaultRig) -> None:
    filler: list[Path] = []
    _broken_then_restored(
        fault_rig,
        ["my lips are turning blue", "and I have a fever"],
        break_it=lambda: filler.append(fill(fault_rig.mount)),
        restore=lambda: [f.unlink() for f in filler],
        hint="the disk holding the tracker database is full",
    )


def test_locked_database_holds_messages_in_order(fault_rig: FaultRig) -> None:
    lock = sqlite3.connect(fault_rig.url.removeprefix("sqlite:///"), isolation_level=None, timeout=30)
    held = threading.Event()

    def take() -> None:
        lock.execute("BEGIN EXCLUSIVE")
        held.set()

    def release() -> None:
        time.sleep(2)
        lock.execute("ROLLBACK")
        lock.close()

    chat = next(_chats)
    fake = fault_rig.relay.fake
    fake.push_text(chat, "hello")
    fake.wait_sent(chat, 1)
    take()
    assert held.is_set()
    try:
        lines = ["my heart is racing", "and my chest hurts", "also a headache"]
        for line in lines:
            fake.push_text(chat, line)
        first = fake.wait_sent(chat, 2, timeout=fault_rig.relay.settings.relay_rasa_timeout + 5)[1]
        assert "911" in first.params["text"], "a fail-safe while the database is locked"
        assert fault_rig.stack.procs["rasa"].poll() is None
    finally:
        release()
    wait_until(
        lambda: user_texts(fault_rig.url, fault_rig.sender(chat)) == ["hello", *lines],
        timeout=90,
        what="held messages processed in order, once",
    )
    fake.wait_for(chat, lambda c: "🚨" in c.params.get("text", "") and c.params.get("reply_parameters") is not None, timeout=30)


def test_database_unreachable_on_postgresql(pg_cluster: PgCluster, tmp_path: Path) -> None:
    url = pg_cluster.create_database(f"faults_{uuid.uuid4().hex[:8]}")
    with private_rig(url, tmp_path, tmp_path) as rig:
        _broken_then_restored(
            rig,
            ["I fainted this morning", "and I'm very drowsy"],
            break_it=pg_cluster.stop,
            restore=pg_cluster.start,
            hint="the tracker database is unreachable",
            readable=False,
        )


def test_read_only_database_on_postgresql(pg_cluster: PgCluster, tmp_path: Path) -> None:
    """A database that takes no writes (a standby after failover): fail-safe, a clear log line, no crash."""
    url = pg_cluster.create_database(f"faults_{uuid.uuid4().hex[:8]}")
    with private_rig(url, tmp_path, tmp_path) as rig:
        try:
            _broken_then_restored(
                rig,
                ["my lips look blue", "and my fever is 39.5"],
                break_it=lambda: (pg_cluster.set_read_only(True), time.sleep(1)),
                restore=lambda: pg_cluster.set_read_only(False),
                hint="the tracker database is read-only",
            )
        finally:
            pg_cluster.set_read_only(False)  # the cluster is shared with the other PostgreSQL tests

"""`make chaos`: patients keep writing while parts of the product are broken at random.

The whole product runs as deployed on one machine (action server, Rasa server, clinic app, clinic
worker and the Telegram relay long-polling the fake Bot API) on a throw-away PostgreSQL cluster. Patients
write at `rate` messages per second; every fourth chat sends an unmistakable emergency, at
each position of a conversation in turn. Meanwhile, at random times from a seeded generator, one fault after another:

* `kill_relay`, `kill_rasa`, `kill_actions`, `kill_clinic`, `kill_clinic_worker`: SIGKILL, then a restart, as a
  supervisor would (the harness plays the supervisor; issue 16 builds the real one);
* `restart_postgres`: the database server stopped for a few seconds, then started;
* `freeze_rasa`: SIGSTOP of the Rasa server for longer than the relay's timeout, then SIGCONT;
* `kill_relay_rasa_frozen`: both at once: Rasa frozen until the relay has sent its fail-safes,
  then the relay SIGKILLed and restarted, then Rasa thawed (the messages in flight had a reply
  but were neither stored nor parked);
* `outbox_disk_full`: the filesystem holding the relay's outbox and inbox filled to the last
  byte for a while (needs root to mount a small tmpfs; skipped and reported otherwise).

Afterwards it checks, from the database and the fake Bot API's log:
* every message reached Rasa once (none lost, none stored twice), in its chat's order;
* every message got a reply (a fail-safe counts) within the relay's timeout plus `RECOVERY_S`;
* every emergency message's replies are emergency advice (🚨, 911), not the generic fail-safe;
* and it counts messages answered more than once (a duplicate reply is better than none, so it
  is a figure, not a failure).
It prints these figures overall and per fault kind, writes var/bench/chaos.json, and exits 1
on any loss, duplicate, reordering, unanswered message or emergency reply without 911.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from starlette.datastructures import Secret

from bot import PROJECT_ROOT
from bot.servers import Stack, isolated_settings
from bot.telegram.identity import sender_id
from tools.benchmarks.soak import FIRST_CHAT, Plan, delivery, stored_user_texts
from tools.evaluate import patient_conversations, percentile
from tools.fake_bot_api import FakeTelegram, Sent
from tools.pgcluster import PgCluster, pg_bin, throwaway_cluster

TOKEN = "9100:chaos-token"
FAULT_KINDS = (
    "kill_relay",
    "kill_rasa",
    "kill_actions",
    "kill_clinic",
    "kill_clinic_worker",
    "restart_postgres",
    "freeze_rasa",
    "kill_relay_rasa_frozen",
    "outbox_disk_full",
)
EMERGENCY_MARK = "🚨"  # opens every emergency answer and the emergency fail-safe; the generic fail-safe lacks it
RECOVERY_S = 90.0  # a message sent during a fault is answered within the relay timeout plus this
PER_CHAT = 6
EMERGENCY_EVERY = 4  # every fourth chat's third message is an emergency
EMERGENCIES = [
    "I can't breathe properly and my lips look blue",
    "my husband is confused and doesn't know where he is",
    "I fainted in the bathroom a minute ago",
    "she just had a seizure",
    "crushing pain in my chest right now",
]
BENIGN = [
    "hello",
    "I had my infusion last week",
    "I feel a bit tired today",
    "slight headache this morning",
    "thanks",
    "ok",
    "no other symptoms",
    "I am drinking plenty of water",
]
DOWN_S = {"restart_postgres": 4.0, "outbox_disk_full": 10.0}


@dataclass
class Fault:
    kind: str
    at_s: float  # from the start of the load
    took_s: float = 0.0  # until the part served again
    skipped: str = ""


@dataclass
class Rig:
    stack: Stack
    pg: PgCluster
    outbox_mount: Path | None
    faults: list[Fault] = field(default_factory=list)

    def inject(self, kind: str) -> str:
        """Break one part and bring it back; returns why it was skipped, or ''."""
        stack = self.stack
        if kind.startswith("kill_") and kind != "kill_relay_rasa_frozen":
            name = kind.removeprefix("kill_").replace("_", "-")  # kill_clinic_worker: the clinic-worker process
            stack.kill(name)
            restart = {
                "relay": stack.start_relay, "rasa": stack.start_rasa, "actions": stack.start_actions,
                "clinic": lambda: stack.start_clinic(worker=False), "clinic-worker": stack.start_clinic_worker,
            }  # fmt: skip
            restart[name]()
        elif kind == "restart_postgres":
            self.pg.stop()
            time.sleep(DOWN_S[kind])
            self.pg.start()
        elif kind == "freeze_rasa":
            pid = stack.procs["rasa"].pid
            os.killpg(pid, signal.SIGSTOP)
            time.sleep(stack.settings.relay_rasa_timeout + 3)
            os.killpg(pid, signal.SIGCONT)
        elif kind == "kill_relay_rasa_frozen":
            pid = stack.procs["rasa"].pid
            os.killpg(pid, signal.SIGSTOP)
            try:
                time.sleep(stack.settings.relay_rasa_timeout + 1)  # the fail-safes are out
                stack.kill("relay")
                stack.start_relay()
            finally:
                os.killpg(pid, signal.SIGCONT)
        elif kind == "outbox_disk_full":
            if self.outbox_mount is None:
                return "needs root to mount a small tmpfs for the outbox"
            filler = fill(self.outbox_mount)
            time.sleep(DOWN_S[kind])
            filler.unlink()
        return ""


def fill(mount: Path) -> Path:
    """Write zeros until the filesystem is full, down to the last byte."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


@contextlib.contextmanager
def small_tmpfs(size: str = "16m") -> Iterator[Path | None]:
    """A tmpfs for the outbox (so it can be filled); None where mounting is not allowed."""
    path = Path(tempfile.mkdtemp(prefix="crs-chaos-outbox-"))
    mount, umount = shutil.which("mount") or "/usr/bin/mount", shutil.which("umount") or "/usr/bin/umount"
    command = [mount, "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]
    mounted = os.geteuid() == 0 and subprocess.run(command, capture_output=True).returncode == 0
    try:
        yield path if mounted else None
    finally:
        if mounted:
            subprocess.run([umount, "-l", str(path)], capture_output=True)
        shutil.rmtree(path, ignore_errors=True)


def schedule(seconds: float, count: int, rng: random.Random, kinds: tuple[str, ...] = FAULT_KINDS) -> list[tuple[float, str]]:
    """`count` faults over the run, kinds in shuffled rounds (each kind once before any repeats)."""
    order: list[str] = []
    while len(order) < count:
        round_ = list(kinds)
        rng.shuffle(round_)
        order += round_
    if count <= 0:
        return []
    gap = seconds * 0.85 / count
    return [(seconds * 0.05 + i * gap + rng.uniform(0, gap * 0.5), kind) for i, kind in enumerate(order[:count])]


def match_replies(pushes: dict[tuple[int, int], float], sent: list[Sent]) -> dict[tuple[int, int], list[Sent]]:
    """Each message's replies: in each chat, messages in order take the first unused direct reply
    at or after their push (the answer or the fail-safe), and keep every reply up to the next
    message's (late answers threaded to it, a repeat after a takeover)."""
    by_chat: dict[int, list[Sent]] = {}
    for reply in sorted(sent, key=lambda r: r.at):
        by_chat.setdefault(int(reply.params["chat_id"]) - FIRST_CHAT, []).append(reply)
    matched: dict[tuple[int, int], list[Sent]] = {}
    for c in {c for c, _ in pushes}:
        replies = by_chat.get(c, [])
        keys = sorted((k for cc, k in pushes if cc == c), key=lambda k: pushes[(c, k)])
        position, starts = 0, []
        for k in keys:
            while position < len(replies) and (replies[position].at < pushes[(c, k)] or replies[position].params.get("reply_parameters")):
                position += 1
            starts.append(position if position < len(replies) else None)
            position += 1
        for index, k in enumerate(keys):
            first = starts[index]
            if first is None:
                matched[(c, k)] = []
                continue
            following = next((p for p in starts[index + 1 :] if p is not None), len(replies))
            matched[(c, k)] = replies[first:following]
    return matched


def conversations(chats: int) -> tuple[list[list[str]], set[tuple[int, int]]]:
    """The patients' messages, and which (chat, message) are emergencies."""
    convs = patient_conversations(chats, PER_CHAT)
    emergencies = set()
    for c in range(0, chats, EMERGENCY_EVERY):  # at every position in turn, so every fault meets some
        k = (c // EMERGENCY_EVERY) % PER_CHAT
        # The rest of an emergency chat is plainly not one, so any emergency advice in that chat
        # after the emergency was sent answers it, whichever order the replies came out in.
        convs[c] = [BENIGN[(c + j) % len(BENIGN)] for j in range(PER_CHAT)]
        convs[c][k] = EMERGENCIES[(c // EMERGENCY_EVERY) % len(EMERGENCIES)]
        emergencies.add((c, k))
    return convs, emergencies


def run(
    minutes: float = 10.0, rate: float = 20.0, faults: int = 16, seed: int = 13, live: int = 120, kinds: tuple[str, ...] = FAULT_KINDS
) -> dict[str, Any]:
    """The chaos run; `faults` spread over the load (each kind once before any repeats)."""
    if pg_bin() is None:
        raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql): the chaos run needs it")
    rng = random.Random(seed)
    plan = Plan(rate, live, PER_CHAT, int(minutes * 60 * rate))  # `live` chats write at once, each every live/rate s
    convs, emergencies = conversations(plan.conversations)
    tmp = Path(tempfile.mkdtemp(prefix="crs-chaos-"))
    pushes: dict[tuple[int, int], float] = {}
    with throwaway_cluster() as pg, small_tmpfs() as mount:
        fake = FakeTelegram(token=TOKEN).start()
        settings = isolated_settings(
            tmp,
            database_url=pg.create_database("chaos"),
            telegram_bot_token=Secret(TOKEN),
            telegram_api_base_url=fake.base_url,
            relay_outbox_path=(mount or tmp) / "outbox.db",
        )
        rig = Rig(Stack(settings, log_dir=tmp), pg, mount)
        try:
            rig.stack.start()
            rig.stack.start_relay()
            rig.stack.start_clinic()
            start = time.monotonic()
            injector = threading.Thread(
                target=_inject_all, args=(rig, schedule(plan.total / rate, faults, rng, kinds), start), name="chaos-faults"
            )
            injector.start()
            for n in range(plan.total):
                at, c, k = plan.message(n)
                time.sleep(max(0.0, start + at - time.monotonic()))
                pushes[(c, k)] = time.monotonic()
                fake.push_text_nowait(FIRST_CHAT + c, convs[c][k])
            injector.join()
            load_end = time.monotonic()
            senders = [sender_id(FIRST_CHAT + c, str(settings.sender_id_key)) for c in range(len(convs))]
            deadline = load_end + settings.relay_rasa_timeout + RECOVERY_S
            while True:  # parked messages still going into Rasa, late answers still going out
                sent, stored = fake.sent(), stored_user_texts(str(settings.database_url))
                settled = all(match_replies(pushes, sent).values()) and delivery(stored, senders, _sent_texts(convs, pushes))["lost"] == 0
                if settled or time.monotonic() > deadline:
                    break
                time.sleep(2)
            settle_s = time.monotonic() - load_end
            time.sleep(3)  # a late answer after its message was stored
            alive = {name: proc.poll() is None for name, proc in rig.stack.procs.items()}
            sent, stored = fake.sent(), stored_user_texts(str(settings.database_url))
        finally:
            rig.stack.stop()
            fake.stop()
    result = books(rig.faults, convs, emergencies, pushes, sent, stored, settings, start, alive, rate, minutes)
    result["settled_after_load_s"] = round(settle_s, 1)
    return result


def _sent_texts(convs: list[list[str]], pushes: dict[tuple[int, int], float]) -> list[list[str]]:
    return [[convs[c][k] for k in range(PER_CHAT) if (c, k) in pushes] for c in range(len(convs))]


def _inject_all(rig: Rig, plan: list[tuple[float, str]], start: float) -> None:
    for at, kind in plan:
        time.sleep(max(0.0, start + at - time.monotonic()))
        fault = Fault(kind, round(time.monotonic() - start, 1))
        t0 = time.monotonic()
        try:
            fault.skipped = rig.inject(kind)
        except Exception as exc:  # a part that does not come back is a finding, not a harness crash
            fault.skipped = f"failed: {type(exc).__name__}: {exc}"
        fault.took_s = round(time.monotonic() - t0, 1)
        rig.faults.append(fault)


def books(
    faults: list[Fault],
    convs: list[list[str]],
    emergencies: set[tuple[int, int]],
    pushes: dict[tuple[int, int], float],
    sent: list[Sent],
    stored: dict[str, list[str]],
    settings: Any,
    start: float,
    alive: dict[str, bool],
    rate: float,
    minutes: float,
) -> dict[str, Any]:
    matched = match_replies(pushes, sent)
    lat = {key: (replies[0].at - pushes[key]) * 1000 for key, replies in matched.items() if replies}
    bound_ms = (settings.relay_rasa_timeout + RECOVERY_S) * 1000
    late = {key for key in pushes if lat.get(key, float("inf")) > bound_ms}
    senders = [sender_id(FIRST_CHAT + c, str(settings.sender_id_key)) for c in range(len(convs))]
    sent_texts = _sent_texts(convs, pushes)
    delivered = delivery(stored, senders, sent_texts)
    advice_s = {}  # emergency → seconds to the first emergency advice in its chat after it was sent
    for c, k in emergencies & pushes.keys():
        times = [
            r.at
            for r in sent
            if int(r.params["chat_id"]) == FIRST_CHAT + c and r.at >= pushes[(c, k)] and _is_emergency_advice(r.params.get("text", ""))
        ]
        if times:
            advice_s[(c, k)] = min(times) - pushes[(c, k)]
    with_911 = {key for key, seconds in advice_s.items() if seconds * 1000 <= bound_ms}
    direct = {key: sum(1 for r in replies if not r.params.get("reply_parameters")) for key, replies in matched.items()}
    per_kind: dict[str, dict[str, Any]] = {}
    for kind in FAULT_KINDS:
        mine = [f for f in faults if f.kind == kind]
        windows = [(start + f.at_s, start + f.at_s + f.took_s + 15) for f in mine if not f.skipped]
        inside = [key for key, t in pushes.items() if any(a <= t < b for a, b in windows)]
        emerg = [key for key in inside if key in emergencies]
        per_kind[kind] = {
            "injected": len([f for f in mine if not f.skipped]),
            "skipped": sorted({f.skipped for f in mine if f.skipped}),
            "back_in_s_max": max((f.took_s for f in mine), default=0.0),
            "messages_during": len(inside),
            "unanswered": sum(1 for key in inside if key in late),
            "p95_reply_ms": round(percentile([lat[key] for key in inside if key in lat], 0.95), 1),
            "emergencies_during": len(emerg),
            "emergencies_with_911": sum(1 for key in emerg if key in with_911),
        }
    answered = [v for v in lat.values() if v <= bound_ms]
    result: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "database": "postgresql",
        "minutes": minutes,
        "rate_msg_s": rate,
        "messages": len(pushes),
        "conversations": sum(1 for texts in sent_texts if texts),
        **delivered,
        "unanswered": len(late),
        "p50_reply_ms": round(percentile(answered, 0.5), 1),
        "p95_reply_ms": round(percentile(answered, 0.95), 1),
        "answered_more_than_once": sum(1 for n in direct.values() if n > 1),
        "emergency_misses": [_timeline(c, k, convs, pushes, sent, start) for c, k in sorted((emergencies & pushes.keys()) - with_911)],
        "emergencies": len(emergencies & pushes.keys()),
        "emergencies_with_911": len(with_911),
        "emergency_advice_p50_s": round(percentile(list(advice_s.values()), 0.5), 1),
        "emergency_advice_max_s": round(max(advice_s.values(), default=0.0), 1),
        "processes_alive": alive,
        "faults": [asdict(f) for f in faults],
        "per_kind": per_kind,
    }
    result["ok"] = passed(result)
    return result


def _timeline(c: int, k: int, convs: list[list[str]], pushes: dict[tuple[int, int], float], sent: list[Sent], start: float) -> dict:
    """What happened in the chat of an emergency that got no emergency advice: its messages and
    the replies, in time order (seconds from the start of the load), for the operator to read."""
    events = [(pushes[(c, j)] - start, f"patient #{j}: {convs[c][j]}") for j in range(PER_CHAT) if (c, j) in pushes]
    for r in sent:
        if int(r.params["chat_id"]) == FIRST_CHAT + c:
            threaded = " (threaded)" if r.params.get("reply_parameters") else ""
            events.append((r.at - start, f"bot{threaded}: {r.params.get('text', '')[:70]}"))
    return {"chat": c, "message": k, "events": [f"{t:7.1f} s {what}" for t, what in sorted(events)]}


def _is_emergency_advice(text: str) -> bool:
    return EMERGENCY_MARK in text and "911" in text


def passed(r: dict[str, Any]) -> bool:
    return (
        r["lost"] == 0
        and r["duplicated"] == 0
        and r["chats_out_of_order"] == 0
        and r["unanswered"] == 0
        and r["emergencies_with_911"] == r["emergencies"]
        and all(r["processes_alive"].values())
        and not any(f["skipped"].startswith("failed") for f in r["faults"])
    )


def format_result(r: dict[str, Any]) -> str:
    share = r["emergencies_with_911"] / r["emergencies"] if r["emergencies"] else 1.0
    lines = [
        f"chaos — {r['machine']}, {r['date']}, {r['database']}",
        f"{r['messages']} messages from {r['conversations']} chats at {r['rate_msg_s']:g} msg/s for {r['minutes']:g} min, "
        f"{sum(k['injected'] for k in r['per_kind'].values())} faults",
        f"lost {r['lost']}, duplicated {r['duplicated']}, chats out of order {r['chats_out_of_order']}, unanswered {r['unanswered']} "
        f"(answered more than once {r['answered_more_than_once']}), "
        f"emergencies given emergency advice (🚨, 911) {r['emergencies_with_911']}/{r['emergencies']} ({share:.0%}, "
        f"p50 {r['emergency_advice_p50_s']} s, max {r['emergency_advice_max_s']} s after sending); "
        f"reply p50 {r['p50_reply_ms']} ms, p95 {r['p95_reply_ms']} ms; books settled {r.get('settled_after_load_s')} s after the load",
        f"{'fault':<18} {'injected':>8} {'back in s':>9} {'msgs during':>11} {'unanswered':>10} {'p95 ms':>8} {'911':>7}",
    ]
    for kind, k in r["per_kind"].items():
        note = f"  skipped: {'; '.join(k['skipped'])}" if k["skipped"] else ""
        lines.append(
            f"{kind:<18} {k['injected']:>8} {k['back_in_s_max']:>9} {k['messages_during']:>11} {k['unanswered']:>10} "
            f"{k['p95_reply_ms']:>8} {k['emergencies_with_911']:>3}/{k['emergencies_during']:<3}{note}"
        )
    lines.append(("PASS" if r["ok"] else "FAIL") + f" processes alive at the end: {r['processes_alive']}")
    return "\n".join(lines)


def main(
    minutes: float,
    rate: float,
    faults: int,
    seed: int,
    kinds: tuple[str, ...] = FAULT_KINDS,
    out: Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    unknown = set(kinds) - set(FAULT_KINDS)
    if unknown:
        raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(FAULT_KINDS)}")
    result = run(minutes=minutes, rate=rate, faults=faults, seed=seed, kinds=kinds)
    out = out or PROJECT_ROOT / "var" / "bench" / "chaos.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    echo(format_result(result))
    return result

"""`make bench-relay`: what the Telegram relay adds on top of Rasa, and whether it loses anything.

One run, three phases with the same open-loop schedule (messages arrive at a fixed rate, as
Telegram delivers them, whether or not earlier ones were answered):

1. direct: each message POSTed straight to Rasa's REST channel (the baseline);
2. polling: each message pushed as an update into the fake Bot API, the relay long-polls it;
3. webhook: the fake Bot API POSTs each update to the relay's webhook (secret header checked).

`chats` simulated patients each send `per_chat` messages, built from the project's own cases;
a chat's messages are `chats / rate` seconds apart (a patient types slower than one message
per second, and Telegram allows a bot ~1 message/s per chat). Latency is update → first
sendMessage for the relay, request → response for direct. Every message must reach Rasa in
its chat's order (read back from the trackers): lost and out-of-order counts are reported.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from starlette.datastructures import Secret

from bot import PROJECT_ROOT
from bot.servers import Stack, free_port, isolated_settings
from bot.settings import Settings
from bot.telegram.identity import sender_id
from tools.evaluate import RestClient, patient_conversations, percentile
from tools.fake_bot_api import FakeTelegram

TOKEN = "9000:bench-token"


def summary(latencies: list[float], sent: int, delivery: tuple[int, int, int], seconds: float) -> dict[str, Any]:
    lost, duplicated, disorder = delivery
    return {
        "messages": sent,
        "answered": len(latencies),
        "p50_ms": round(percentile(latencies, 0.50), 1),
        "p95_ms": round(percentile(latencies, 0.95), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "lost": lost,
        "duplicated": duplicated,
        "order_violations": disorder,
        "seconds": round(seconds, 1),
    }


def schedule(convs: list[list[str]], rate: float) -> list[tuple[float, int, int]]:
    """(offset seconds, chat index, message index): round-robin over chats at `rate` msg/s."""
    plan = []
    n = 0
    for k in range(max(len(c) for c in convs)):
        for c, conv in enumerate(convs):
            if k < len(conv):
                plan.append((n / rate, c, k))
                n += 1
    return plan


def _tracker_user_texts(settings: Settings, sender: str) -> list[str]:
    events = RestClient(settings.rasa_url, str(settings.rasa_api_token)).tracker(sender)["events"]
    return [e.get("text") for e in events if e.get("event") == "user"]


def compare_delivery(stored: list[list[str]], convs: list[list[str]]) -> tuple[int, int, int]:
    """(lost, duplicated, chats out of order): what each chat stored against what it sent."""
    lost = duplicated = disorder = 0
    for got, conv in zip(stored, convs, strict=True):
        lost += sum(max(0, conv.count(m) - got.count(m)) for m in set(conv))
        duplicated += sum(max(0, got.count(m) - conv.count(m)) for m in set(got))
        kept = [m for m in got if m in conv]
        disorder += int(kept != [m for m in conv if m in kept])
    return lost, duplicated, disorder


def check_delivery(settings: Settings, senders: list[str], convs: list[list[str]]) -> tuple[int, int, int]:
    """(lost, duplicated, chats out of order) from what Rasa stored for each chat."""
    return compare_delivery([_tracker_user_texts(settings, sender) for sender in senders], convs)


async def run_direct(settings: Settings, convs: list[list[str]], rate: float, tag: str) -> dict[str, Any]:
    plan = schedule(convs, rate)
    latencies: list[float] = []
    senders = [f"bench-{tag}-{c}" for c in range(len(convs))]
    chat_locks = [asyncio.Lock() for _ in convs]  # a REST client also keeps one chat's order
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=256)) as http:

        async def one(at: float, c: int, k: int, start: float) -> None:
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            t0 = time.monotonic()
            async with chat_locks[c]:
                r = await http.post(f"{settings.rasa_url}/webhooks/rest/webhook", json={"sender": senders[c], "message": convs[c][k]})
            if r.status_code == 200 and r.json():
                latencies.append((time.monotonic() - t0) * 1000)

        start = time.monotonic()
        await asyncio.gather(*(one(at, c, k, start) for at, c, k in plan))
        seconds = time.monotonic() - start
    delivery = await asyncio.to_thread(check_delivery, settings, senders, convs)
    return summary(latencies, len(plan), delivery, seconds)


def run_relay(settings: Settings, fake: FakeTelegram, convs: list[list[str]], rate: float, first_chat: int) -> dict[str, Any]:
    plan = schedule(convs, rate)
    chat_ids = [first_chat + c for c in range(len(convs))]
    pushes: dict[tuple[int, int], float] = {}
    start = time.monotonic()
    for at, c, k in plan:
        time.sleep(max(0.0, start + at - time.monotonic()))
        pushes[(c, k)] = time.monotonic()
        fake.push_text_nowait(chat_ids[c], convs[c][k])

    def first_replies() -> list[float]:
        found = []
        for (c, k), pushed in pushes.items():
            next_push = pushes.get((c, k + 1), float("inf"))
            replies = [s.at for s in fake.sent(chat_ids[c]) if pushed <= s.at < next_push]
            if replies:
                found.append((min(replies) - pushed) * 1000)
        return found

    deadline = time.monotonic() + 60  # every message answered, or give up
    while len(latencies := first_replies()) < len(plan) and time.monotonic() < deadline:
        time.sleep(0.5)
    seconds = time.monotonic() - start
    senders = [sender_id(chat, str(settings.sender_id_key)) for chat in chat_ids]
    return summary(latencies, len(plan), check_delivery(settings, senders, convs), seconds)


def main(chats: int = 200, per_chat: int = 5, rate: float = 10.0, out: Path | None = None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="crs-bench-relay-"))
    convs = patient_conversations(chats, per_chat)
    fake = FakeTelegram(token=TOKEN).start()
    settings = isolated_settings(tmp, telegram_bot_token=Secret(TOKEN), telegram_api_base_url=fake.base_url)
    stack = Stack(settings, log_dir=tmp)
    results: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()} {_cpus()} CPUs, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "chats": chats,
        "messages_per_chat": per_chat,
        "rate_msg_s": rate,
    }
    try:
        stack.start()
        asyncio.run(run_direct(settings, patient_conversations(20, 2), rate, "warm"))
        results["direct"] = asyncio.run(run_direct(settings, convs, rate, "direct"))
        stack.start_relay()
        results["polling"] = run_relay(settings, fake, convs, rate, first_chat=1_000_000)
        stack.stop_one("relay")
        hook_port = free_port()
        hook = dataclasses.replace(settings, telegram_webhook_url=f"http://127.0.0.1:{hook_port}/tg", telegram_webhook_port=hook_port)
        hook_stack = Stack(hook, log_dir=tmp)
        hook_stack.start_relay()
        try:
            results["webhook"] = run_relay(hook, fake, convs, rate, first_chat=2_000_000)
        finally:
            hook_stack.stop()
    finally:
        stack.stop()
        fake.stop()
    for mode in ("polling", "webhook"):
        results[mode]["overhead_p50_ms"] = round(results[mode]["p50_ms"] - results["direct"]["p50_ms"], 1)
        results[mode]["overhead_p95_ms"] = round(results[mode]["p95_ms"] - results["direct"]["p95_ms"], 1)
    out = out or PROJECT_ROOT / "var" / "bench" / "relay.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    return results


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def format_results(r: dict[str, Any]) -> str:
    lines = [
        f"relay benchmark — {r['machine']}, {r['date']}",
        f"{r['chats']} chats × {r['messages_per_chat']} messages, open loop at {r['rate_msg_s']:g} msg/s",
        f"{'mode':<8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'+p50':>6} {'+p95':>6} {'lost':>5} {'dup':>4} {'order':>6}",
    ]
    for mode in ("direct", "polling", "webhook"):
        m = r[mode]
        lines.append(
            f"{mode:<8} {m['p50_ms']:>7} {m['p95_ms']:>7} {m['p99_ms']:>7} "
            f"{m.get('overhead_p50_ms', ''):>6} {m.get('overhead_p95_ms', ''):>6} "
            f"{m['lost']:>5} {m['duplicated']:>4} {m['order_violations']:>6}"
        )
    lines.append("(+p50/+p95: relay overhead over the direct REST call; target p95 overhead ≤ 10 ms, 0 lost, 0 out of order)")
    return "\n".join(lines)

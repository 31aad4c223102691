"""`python -m tools bench-checkins`: 10,000 enrolled patients' check-ins due in the same minute.

A throw-away SQLite database with N CAR-T enrolments linked to N chats, a schedule whose one
check-in falls due a few seconds after the start, and the relay's own sending stack: a
python-telegram-bot Bot with the relay's rate limiter (TELEGRAM_SEND_RATE, 30 msg/s) against
the fake Bot API, check-ins paced at `send_rate_share` of it (the rest stays for patients'
replies). Prints the time to drain, the highest rate seen in any second, and how many chats
got none or more than one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import platform
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.ext import ApplicationBuilder

from bot import PROJECT_ROOT
from bot.checkins.schedule import load_checkin_config
from bot.checkins.scheduler import CheckinScheduler, Texts
from bot.checkins.store import CHATS, CHECKINS, create_checkin_tables
from bot.clinic import worklist
from bot.clinic.schema import ENROLMENTS
from bot.db import create_db_engine
from bot.telegram.aiohttp_request import AiohttpRequest
from bot.telegram.limits import PatientChatRateLimiter
from tools.fake_bot_api import FakeTelegram

TOKEN = "5151:bench-checkins"
SEND_RATE = 30.0


def _setup(engine: sa.engine.Engine, patients: int, now: datetime) -> None:
    create_checkin_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS),
            [{"code": f"B{n:05d}", "label": f"Bench {n}", "therapy": "tisagenlecleucel", "infusion_date": now.date().isoformat(),
              "created_by": "bench", "created_at": 0, "timezone": "UTC"} for n in range(patients)],
        )  # fmt: skip
        conn.execute(
            sa.insert(CHATS),
            [
                {"code": f"B{n:05d}", "chat_id": 100_000 + n, "sender_id": f"bench-{n}", "linked_at": 0, "opted_out": False}
                for n in range(patients)
            ],
        )  # fmt: skip


async def _drain(engine: sa.engine.Engine, fake: FakeTelegram, patients: int, due: datetime, share: float) -> dict[str, Any]:
    base = load_checkin_config()
    window = dataclasses.replace(base.schedules["car_t"][0], first_day=0, last_day=0, times=(due.time(),), neuro_times=frozenset())
    far = due + timedelta(hours=12)  # quiet hours a minute long, far from the check-in
    config = dataclasses.replace(
        base, schedules={"car_t": (window,)}, quiet_start=far.time().replace(second=0),
        quiet_end=(far + timedelta(minutes=1)).time().replace(second=0),
    )  # fmt: skip
    app = (
        ApplicationBuilder().token(TOKEN).base_url(f"{fake.base_url}/bot").request(AiohttpRequest(connection_pool_size=64))
        .rate_limiter(PatientChatRateLimiter(overall_max_rate=SEND_RATE)).build()
    )  # fmt: skip
    async with app:

        async def send(chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
            keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(t, callback_data=d) for t, d in buttons]])
            await app.bot.send_message(chat_id, text, reply_markup=keyboard)

        scheduler = CheckinScheduler(
            engine, config, Texts.of(config), send, "bench", worklist.Tracking(levels=()), "UTC", send_rate=SEND_RATE * share
        )
        await asyncio.sleep(max(0.0, due.timestamp() - time.time()))
        t0 = time.monotonic()
        while len(fake.sent()) < patients and time.monotonic() - t0 < patients / (SEND_RATE * share) * 3 + 60:
            await scheduler.tick()
            await asyncio.sleep(0.2)
        drained = time.monotonic() - t0
    per_chat = Counter(s.params.get("chat_id") for s in fake.sent())
    per_second = Counter(int(s.at) for s in fake.sent())
    with engine.connect() as conn:
        statuses = Counter(r.status for r in conn.execute(sa.select(CHECKINS.c.status)))
    return {
        "patients": patients,
        "drain_s": round(drained, 1),
        "rate_share": share,
        "mean_rate": round(len(fake.sent()) / drained, 1) if drained else None,
        "max_per_second": max(per_second.values(), default=0),
        "lost": sum(1 for n in range(patients) if per_chat.get(100_000 + n, 0) == 0),
        "duplicated": sum(1 for c in per_chat.values() if c > 1),
        "statuses": dict(statuses),
    }


def main(patients: int = 10_000, share: float | None = None) -> dict[str, Any]:
    share = share if share is not None else load_checkin_config().send_rate_share
    with tempfile.TemporaryDirectory(prefix="crs-bench-checkins-") as tmp:
        engine = create_db_engine(f"sqlite:///{Path(tmp) / 'checkins.db'}")
        now = datetime.now(UTC).replace(microsecond=0)
        due = now + timedelta(seconds=15)
        t0 = time.monotonic()
        _setup(engine, patients, now)
        setup_s = time.monotonic() - t0
        fake = FakeTelegram(token=TOKEN).start()
        try:
            result = asyncio.run(_drain(engine, fake, patients, due, share))
        finally:
            fake.stop()
            engine.dispose()
    result.update(setup_s=round(setup_s, 1), machine=f"{platform.node()} {platform.machine()}", date=time.strftime("%Y-%m-%d %H:%M"))
    out = PROJECT_ROOT / "var" / "bench" / "checkins.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def format_result(r: dict[str, Any]) -> str:
    budget = SEND_RATE * r["rate_share"]
    return (
        f"check-ins — {r['machine']}, {r['date']}\n"
        f"{r['patients']} patients due at the same second: drained in {r['drain_s']} s "
        f"(mean {r['mean_rate']} msg/s; budget {budget:g} of Telegram's {SEND_RATE:g}; highest in one second {r['max_per_second']})\n"
        f"lost {r['lost']}, duplicated {r['duplicated']}; statuses {r['statuses']}; set-up {r['setup_s']} s"
    )

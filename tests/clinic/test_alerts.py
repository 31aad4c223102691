"""Alerts over the Telegram channel, through the Bot API (the fake one): once, retried, no words."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp
import sqlalchemy as sa

from bot.clinic import alerts, indexer, worklist
from bot.clinic.schema import ALERTS, EVENTS, create_tables
from bot.db import create_db_engine
from tools.fake_bot_api import FakeTelegram

TOKEN = "777:alert-token"


def test_telegram_alert_goes_out_once_after_a_retry(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    create_tables(engine)
    now = time.time()
    events = [
        ("user", {"event": "user", "text": "my lips are blue", "timestamp": now}),
        ("slot", {"event": "slot", "name": "symptoms", "value": ["skin_discoloration"], "timestamp": now}),
        ("slot", {"event": "slot", "name": "triage_level", "value": "emergency", "timestamp": now}),
    ]
    with engine.begin() as conn:
        for type_name, data in events:
            conn.execute(sa.insert(EVENTS).values(sender_id="tg-a", type_name=type_name, timestamp=now, data=json.dumps(data)))
    fake = FakeTelegram(token=TOKEN).start()
    try:
        config = alerts.AlertConfig(
            levels=("emergency",), telegram_chat_id="-100200", telegram_token=TOKEN, telegram_api=fake.base_url, public_url="https://clinic"
        )
        indexer.refresh(engine, config.tracking)
        indexer.refresh(engine, config.tracking)
        assert len(alerts.due(engine)) == 1, "one notice per item and channel, however often the summaries refresh"
        fake.fail_next("sendMessage", status=502)

        async def deliver() -> list[int]:
            async with aiohttp.ClientSession() as session:
                first = await alerts.deliver_due(engine, config, session)
                with engine.begin() as conn:  # skip the backoff wait
                    conn.execute(sa.update(ALERTS).values(next_try_at=0))
                second = await alerts.deliver_due(engine, config, session)
                third = await alerts.deliver_due(engine, config, session)
                return [first, second, third]

        assert asyncio.run(deliver()) == [0, 1, 0]
        sent = fake.sent(-100200)
        assert len(sent) == 1
        text = sent[0].params["text"]
        assert "EMERGENCY" in text and "https://clinic/conversations/tg-a" in text and "blue" in text.lower()
        assert "my lips" not in text, "symptom labels, not the patient's words"
        row = alerts.all_alerts(engine)[0]
        assert (row["status"], row["attempts"]) == ("sent", 2) and row["last_error"] == ""
    finally:
        fake.stop()


def test_an_escalation_goes_to_the_on_call_chat_once_saying_how_long_it_waited(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'alerts.db'}")
    create_tables(engine)
    opened = time.time() - 3600
    slot = {"event": "slot", "name": "triage_level", "value": "emergency", "timestamp": opened}
    with engine.begin() as conn:
        conn.execute(sa.insert(EVENTS).values(sender_id="tg-b", type_name="slot", timestamp=opened, data=json.dumps(slot)))
    fake = FakeTelegram(token=TOKEN).start()
    try:
        config = alerts.AlertConfig(
            levels=("emergency",), telegram_chat_id="-100200", telegram_token=TOKEN, telegram_api=fake.base_url,
            escalation_chat_id="-100300", escalate_after={"emergency": 10.0},
        )  # fmt: skip
        indexer.refresh(engine, config.tracking)
        assert worklist.escalate_due(engine, config.escalate_after, config.escalation_channels) != []
        assert worklist.escalate_due(engine, config.escalate_after, config.escalation_channels) == []

        async def deliver() -> int:
            async with aiohttp.ClientSession() as session:
                return await alerts.deliver_due(engine, config, session) + await alerts.deliver_due(engine, config, session)

        assert asyncio.run(deliver()) == 2, "the alert and the escalation, each once"
        assert len(fake.sent(-100200)) == 1
        [escalation] = fake.sent(-100300)
        assert "NOT ACKNOWLEDGED after 10 min" in escalation.params["text"] and "EMERGENCY" in escalation.params["text"]
    finally:
        fake.stop()

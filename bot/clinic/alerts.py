"""Alerts to the care team when a conversation first reaches `emergency` (and optionally `urgent`).

Raised from the summary refresh (bot/clinic/conversations.py), at most once per conversation,
level and channel (a unique constraint, so a re-index or a second app instance cannot send
twice). Channels: an HTTP webhook (JSON POST) and/or a Telegram chat of the care team, sent
through the Bot API with the bot's token. A failed send is retried with exponential backoff
(up to 5 minutes apart) until it goes through; status, attempts and the last error are shown
on the Alerts page. Alerts carry the patient label or pseudonym, the level, the symptoms and a
link to the conversation, never the patient's own words.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from bot.clinic.conversations import load_conversation, symptom_label
from bot.clinic.schema import ALERTS

log = logging.getLogger("bot.clinic.alerts")
MAX_BACKOFF = 300.0


@dataclass(frozen=True)
class AlertConfig:
    levels: tuple[str, ...]
    webhook_url: str | None = None
    telegram_chat_id: str | None = None
    telegram_token: str | None = None
    telegram_api: str = "https://api.telegram.org"
    public_url: str = ""

    @property
    def channels(self) -> list[str]:
        found = []
        if self.webhook_url:
            found.append("webhook")
        if self.telegram_chat_id and self.telegram_token:
            found.append("telegram")
        return found


def raise_alerts(engine: Engine, config: AlertConfig, reached: list[tuple[str, str]]) -> int:
    """Queue one alert per (conversation, level, channel) for levels that alert; returns how many."""
    queued = 0
    now = time.time()
    for sender_id, level in reached:
        if level not in config.levels:
            continue
        for channel in config.channels:
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.insert(ALERTS).values(
                            sender_id=sender_id, level=level, channel=channel, status="pending", attempts=0,
                            last_error="", created_at=now, next_try_at=now,
                        )
                    )  # fmt: skip
                queued += 1
            except IntegrityError:
                pass  # already raised once
    return queued


def due(engine: Engine, now: float | None = None) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ALERTS).where(ALERTS.c.status != "sent", ALERTS.c.next_try_at <= (now or time.time())).order_by(ALERTS.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def all_alerts(engine: Engine, limit: int = 200) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(ALERTS).order_by(ALERTS.c.id.desc()).limit(limit)).mappings()]


def _mark(engine: Engine, alert_id: int, error: str | None, attempts: int) -> None:
    now = time.time()
    values: dict[str, Any] = {"attempts": attempts}
    if error is None:
        values.update(status="sent", sent_at=now, last_error="")
    else:
        values.update(status="retrying", last_error=error[:255], next_try_at=now + min(MAX_BACKOFF, 2.0**attempts))
    with engine.begin() as conn:
        conn.execute(sa.update(ALERTS).where(ALERTS.c.id == alert_id).values(**values))


def _payload(engine: Engine, config: AlertConfig, alert: dict[str, Any]) -> dict[str, Any]:
    conv = load_conversation(engine, alert["sender_id"])
    patient = conv.patient if conv else "unknown"
    symptoms = [symptom_label(s) for s in (conv.symptoms if conv else [])]
    link = f"{config.public_url.rstrip('/')}/conversations/{alert['sender_id']}" if config.public_url else ""
    return {
        "event": "crs.triage_alert",
        "level": alert["level"],
        "patient": patient,
        "therapy": conv.therapy if conv else "",
        "symptoms": symptoms,
        "conversation": link or alert["sender_id"],
        "raised_at": alert["created_at"],
    }


async def _send(session: aiohttp.ClientSession, config: AlertConfig, channel: str, payload: dict[str, Any]) -> None:
    if channel == "webhook":
        async with session.post(config.webhook_url, json=payload) as response:  # type: ignore[arg-type]
            if response.status >= 300:
                raise RuntimeError(f"webhook answered HTTP {response.status}")
        return
    headline = "🚨 EMERGENCY" if payload["level"] == "emergency" else "⚠️ URGENT"
    text = (
        f"{headline}: {payload['patient']}"
        + (f" ({payload['therapy']})" if payload["therapy"] else "")
        + f"\nSymptoms: {', '.join(payload['symptoms']) or 'see conversation'}\n{payload['conversation']}"
    )
    url = f"{config.telegram_api.rstrip('/')}/bot{config.telegram_token}/sendMessage"
    async with session.post(url, json={"chat_id": config.telegram_chat_id, "text": text}) as response:
        if response.status != 200:
            raise RuntimeError(f"Telegram answered HTTP {response.status}")  # never the URL: it holds the token


async def deliver_due(engine: Engine, config: AlertConfig, session: aiohttp.ClientSession) -> int:
    """Send every alert that is due; returns how many went out."""
    sent = 0
    for alert in await asyncio.to_thread(due, engine):
        payload = await asyncio.to_thread(_payload, engine, config, alert)
        try:
            await _send(session, config, alert["channel"], payload)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            error = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
            log.warning("clinic.alert.retry channel=%s attempts=%d error=%s", alert["channel"], alert["attempts"] + 1, error)
            await asyncio.to_thread(_mark, engine, alert["id"], error, alert["attempts"] + 1)
            continue
        await asyncio.to_thread(_mark, engine, alert["id"], None, alert["attempts"] + 1)
        log.info("clinic.alert.sent channel=%s level=%s", alert["channel"], alert["level"])
        sent += 1
    return sent

"""Notices to the care team: the first alert of each worklist item, and its escalation.

Notices are queued with their worklist item (bot/clinic/worklist.py), in the transaction that
opens or raises it, at most once per item, level, kind and channel (a unique constraint, so a
re-index or a second clinic instance cannot send twice). Alert channels: an HTTP webhook (JSON
POST) and/or a Telegram chat of the care team, through the Bot API with the bot's token. An
item nobody acknowledged within `CLINIC_ESCALATE_AFTER` is sent once more to the escalation
channels (`CLINIC_ESCALATION_WEBHOOK_URL` / `CLINIC_ESCALATION_CHAT_ID`; the alert channels
again if none is set). A failed send is retried with exponential backoff (up to 5 minutes
apart) until it goes through; status, attempts and the last error are on the Alerts page.
Notices carry the patient label or pseudonym, the level, the symptoms and a link, never the
patient's own words.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.clinic import worklist
from bot.clinic.labels import symptom_label
from bot.clinic.schema import ALERTS
from bot.clinic.transcript import load_conversation

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
    escalation_webhook_url: str | None = None
    escalation_chat_id: str | None = None
    escalate_after: dict[str, float] = field(default_factory=lambda: dict(worklist.DEFAULT_ESCALATE_AFTER))  # minutes

    @property
    def channels(self) -> list[str]:
        found = []
        if self.webhook_url:
            found.append("webhook")
        if self.telegram_chat_id and self.telegram_token:
            found.append("telegram")
        return found

    @property
    def escalation_channels(self) -> list[str]:
        """The second channel when one is set; else the first again (an escalation is never dropped)."""
        found = []
        if self.escalation_webhook_url:
            found.append("escalation-webhook")
        if self.escalation_chat_id and self.telegram_token:
            found.append("escalation-telegram")
        return found or self.channels

    @property
    def tracking(self) -> worklist.Tracking:
        return worklist.Tracking(levels=self.levels, channels=tuple(self.channels))

    def destination(self, channel: str) -> tuple[str, str | None]:
        """("webhook", url) or ("telegram", chat id) for a notice's channel."""
        return {
            "webhook": ("webhook", self.webhook_url),
            "telegram": ("telegram", self.telegram_chat_id),
            "escalation-webhook": ("webhook", self.escalation_webhook_url),
            "escalation-telegram": ("telegram", self.escalation_chat_id),
        }.get(channel, ("webhook", None))


def alert_config_of(settings: Any) -> AlertConfig:
    """The alert configuration of `bot.settings.Settings` (raises ValueError on a bad CLINIC_ESCALATE_AFTER)."""
    api = (settings.telegram_api_base_url or "https://api.telegram.org").rstrip("/")
    return AlertConfig(
        levels=settings.clinic_alert_levels,
        webhook_url=settings.clinic_alert_webhook_url,
        telegram_chat_id=settings.clinic_alert_chat_id,
        telegram_token=str(settings.telegram_bot_token) if settings.telegram_bot_token else None,
        telegram_api=api.removesuffix("/bot"),
        public_url=settings.clinic_public_url or settings.clinic_url,
        escalation_webhook_url=settings.clinic_escalation_webhook_url,
        escalation_chat_id=settings.clinic_escalation_chat_id,
        escalate_after=worklist.parse_escalate_after(settings.clinic_escalate_after),
    )


SEND_LEASE_S = 60.0  # a claimed notice is this instance's to send; after a crash, another's


def due(engine: Engine, now: float | None = None) -> list[dict[str, Any]]:
    """Notices due for sending (not sent, not cancelled, their retry time reached)."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ALERTS)
            .where(ALERTS.c.status.not_in(("sent", "cancelled")), ALERTS.c.next_try_at <= (now or time.time()))
            .order_by(ALERTS.c.id)
        ).mappings()
        return [dict(r) for r in rows]


def claim(engine: Engine, alert: dict[str, Any], now: float | None = None) -> bool:
    """Take a due notice for this instance (two clinic instances never both send it): its retry
    time moves SEND_LEASE_S ahead, only if no other instance moved it first."""
    with engine.begin() as conn:
        return bool(
            conn.execute(
                sa.update(ALERTS)
                .where(
                    ALERTS.c.id == alert["id"], ALERTS.c.next_try_at == alert["next_try_at"], ALERTS.c.status.not_in(("sent", "cancelled"))
                )
                .values(next_try_at=(now or time.time()) + SEND_LEASE_S)
            ).rowcount
        )


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
    escalation = alert["kind"] == "escalation"
    return {
        "event": "crs.triage_escalation" if escalation else "crs.triage_alert",
        "item": alert["item_id"],
        "not_acknowledged_for_min": round(config.escalate_after.get(alert["level"], 0)) if escalation else None,
        "level": alert["level"],
        "patient": patient,
        "therapy": conv.therapy if conv else "",
        "symptoms": symptoms,
        "conversation": link or alert["sender_id"],
        "raised_at": alert["created_at"],
    }


async def _send(session: aiohttp.ClientSession, config: AlertConfig, channel: str, payload: dict[str, Any]) -> None:
    kind, target = config.destination(channel)
    if not target:
        raise RuntimeError(f"channel {channel} is no longer configured")
    if kind == "webhook":
        async with session.post(target, json=payload) as response:
            if response.status >= 300:
                raise RuntimeError(f"webhook answered HTTP {response.status}")
        return
    headline = (
        "🚨 EMERGENCY" if payload["level"] == "emergency" else "⚠️ URGENT" if payload["level"] == "urgent" else "ℹ️ " + payload["level"]
    )
    if payload["not_acknowledged_for_min"] is not None:
        headline = f"⏰ NOT ACKNOWLEDGED after {payload['not_acknowledged_for_min']} min — {headline}"
    text = (
        f"{headline}: {payload['patient']}"
        + (f" ({payload['therapy']})" if payload["therapy"] else "")
        + f"\nSymptoms: {', '.join(payload['symptoms']) or 'see conversation'}\n{payload['conversation']}"
    )
    url = f"{config.telegram_api.rstrip('/')}/bot{config.telegram_token}/sendMessage"
    async with session.post(url, json={"chat_id": target, "text": text}) as response:
        if response.status != 200:
            raise RuntimeError(f"Telegram answered HTTP {response.status}")  # never the URL: it holds the token


async def deliver_due(engine: Engine, config: AlertConfig, session: aiohttp.ClientSession) -> int:
    """Send every alert that is due; returns how many went out."""
    sent = 0
    for alert in await asyncio.to_thread(due, engine):
        if not await asyncio.to_thread(claim, engine, alert):
            continue  # another clinic instance is sending it, or it was handled meanwhile
        payload = await asyncio.to_thread(_payload, engine, config, alert)
        try:
            await _send(session, config, alert["channel"], payload)
        except (aiohttp.ClientError, TimeoutError, RuntimeError) as exc:
            error = str(exc) if isinstance(exc, RuntimeError) else type(exc).__name__
            log.warning(
                "clinic.alert.retry kind=%s channel=%s attempts=%d error=%s", alert["kind"], alert["channel"], alert["attempts"] + 1, error
            )
            await asyncio.to_thread(_mark, engine, alert["id"], error, alert["attempts"] + 1)
            continue
        await asyncio.to_thread(_mark, engine, alert["id"], None, alert["attempts"] + 1)
        log.info("clinic.alert.sent kind=%s channel=%s level=%s", alert["kind"], alert["channel"], alert["level"])
        sent += 1
    return sent

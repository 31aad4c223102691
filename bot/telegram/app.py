"""Build and run the python-telegram-bot `Application` for the relay (`python -m bot relay`).

Long polling by default (no public URL needed); webhook mode when `TELEGRAM_WEBHOOK_URL` is set.
In webhook mode python-telegram-bot's own server (tornado) answers 403 to any request without
the right `X-Telegram-Bot-Api-Secret-Token`; if no secret is configured one is generated per
start and registered with `setWebhook`, so the check is never off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from typing import Any
from urllib.parse import urlparse

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    MessageHandler,
    filters,
)

from bot.gc_tuning import freeze_long_lived, monitor_collections
from bot.secret_masking import install as install_secret_masking
from bot.settings import Settings
from bot.telegram.aiohttp_request import AiohttpRequest
from bot.telegram.dedup import MessageClaims, RelayClaims
from bot.telegram.handlers import Relay
from bot.telegram.inbox import DurableApplication, DurableUpdateQueue, Inbox
from bot.telegram.limits import PatientChatRateLimiter
from bot.telegram.logs import configure_logging
from bot.telegram.outbox import Outbox
from bot.telegram.rasa_client import RasaClient
from bot.telegram.splitting import split_message
from bot.telegram.texts import load_texts

log = logging.getLogger("bot.telegram")
CONCURRENT_UPDATES = 256
# Shown in Telegram's command menu.
COMMANDS = [
    ("emergency", "Signs that mean: call 911 now"),
    ("help", "What this bot can and cannot do"),
    ("restart", "Start a new conversation"),
    ("forget", "Delete what this chat has stored"),
    ("checkins", "Turn your care team's check-ins off or on"),
    ("neurocheck", "A short thinking check a caregiver does with the patient"),
]


def emergency_detector() -> Any:
    """The NLU's own symptom extractor, so a fail-safe reply can say "call 911 now" when the
    message names an emergency sign even while Rasa is down."""
    from bot.clinical.knowledge import load_knowledge_base
    from bot.nlu.extractor import SymptomExtractor

    kb = load_knowledge_base()
    extractor = SymptomExtractor(kb)
    extractor("warm up")  # builds the spaCy pipeline now, not on the first outage

    def is_emergency(text: str) -> bool:
        return any(kb.symptom_class(s) == "emergency" for s in extractor(text).present)

    return is_emergency


def bot_api_urls(configured: str) -> tuple[str, str]:
    """python-telegram-bot's `base_url` and `base_file_url` for a self-hosted Bot API server.

    SPEC gives `TELEGRAM_API_BASE_URL` as python-telegram-bot's `base_url`, which ends in
    `/bot` (`http://host:8081/bot`); earlier releases took the server root (`http://host:8081`).
    Both are accepted, so a value written either way works."""
    root = configured.strip().rstrip("/")
    root = root.removesuffix("/bot")
    return f"{root}/bot", f"{root}/file/bot"


def build_relay(settings: Settings) -> Relay:
    return Relay(
        texts=load_texts(),
        rasa=RasaClient(settings.relay_rasa_url or settings.rasa_url, str(settings.rasa_api_token)),
        outbox=Outbox(settings.relay_outbox_path),
        sender_key=str(settings.sender_id_key),
        soft_timeout=settings.relay_rasa_timeout,
    )


def build_checkins(settings: Settings) -> Any:
    """The check-ins of enrolled patients (bot/checkins), on the product's database."""
    from bot.checkins.schedule import load_checkin_config
    from bot.checkins.service import CheckinService
    from bot.clinic.alerts import alert_config_of
    from bot.db import create_db_engine

    owner = f"relay-{os.getpid()}-{secrets.token_hex(4)}"
    config = load_checkin_config()
    return CheckinService(
        create_db_engine(settings.database_url), alert_config_of(settings).tracking, owner, settings.clinic_timezone,
        config=config, send_rate=settings.telegram_send_rate * config.send_rate_share,
    )  # fmt: skip


def checkin_sender(bot: Bot) -> Any:
    """How the check-ins (bot/checkins) send: a message with its buttons as one inline keyboard row."""

    async def send(chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
        keyboard = InlineKeyboardMarkup([[InlineKeyboardButton(t, callback_data=d) for t, d in buttons]]) if buttons else None
        parts = split_message(text)
        for index, part in enumerate(parts):
            await bot.send_message(chat_id, part, reply_markup=keyboard if index == len(parts) - 1 else None)

    return send


def build_application(settings: Settings, relay: Relay, claims: MessageClaims | None = None) -> Application:
    if settings.telegram_bot_token is None:
        raise ValueError("TELEGRAM_BOT_TOKEN is not set")
    builder = (
        ApplicationBuilder()
        .application_class(DurableApplication)
        .update_queue(DurableUpdateQueue(Inbox(settings.relay_outbox_path)))
        .token(str(settings.telegram_bot_token))
        .request(AiohttpRequest(connection_pool_size=256))
        .get_updates_request(AiohttpRequest(connection_pool_size=2))
        .rate_limiter(PatientChatRateLimiter(overall_max_rate=settings.telegram_send_rate))
        .concurrent_updates(CONCURRENT_UPDATES)
        .post_init(lambda app: _post_init(app, relay, claims))
        .post_stop(lambda app: relay.stop())
        .post_shutdown(lambda app: _post_shutdown(app, relay))
    )
    if settings.telegram_api_base_url:
        api, files = bot_api_urls(settings.telegram_api_base_url)
        builder = builder.base_url(api).base_file_url(files)
    application = builder.build()
    text_messages = filters.UpdateType.MESSAGES & ((filters.TEXT & ~filters.COMMAND) | filters.CAPTION)
    application.add_handlers(
        [
            CommandHandler("start", relay.on_start, filters=filters.UpdateType.MESSAGES),
            CommandHandler("help", relay.on_help, filters=filters.UpdateType.MESSAGES),
            CommandHandler("emergency", relay.on_emergency, filters=filters.UpdateType.MESSAGES),
            CommandHandler("restart", relay.on_restart, filters=filters.UpdateType.MESSAGES),
            CommandHandler("forget", relay.on_forget, filters=filters.UpdateType.MESSAGES),
            CommandHandler("checkins", relay.on_checkins, filters=filters.UpdateType.MESSAGES),
            CommandHandler("neurocheck", relay.on_neurocheck, filters=filters.UpdateType.MESSAGES),
            MessageHandler(filters.UpdateType.MESSAGES & filters.COMMAND, relay.on_unknown_command),
            MessageHandler(text_messages, relay.on_text),
            CallbackQueryHandler(relay.on_button),
            MessageHandler(filters.UpdateType.MESSAGES & ~filters.TEXT & ~filters.CAPTION, relay.on_non_text),
        ]
    )
    application.add_error_handler(relay.on_error)
    return application


async def _post_init(application: Application, relay: Relay, claims: MessageClaims | None) -> None:
    relay.is_emergency = await asyncio.to_thread(emergency_detector)
    if claims is not None:  # a copy of a message that reached another instance too is dropped
        queue = application.update_queue
        owner = queue.inbox.instance_id() if isinstance(queue, DurableUpdateQueue) else None
        relay.claims = RelayClaims(claims, application.bot.id, owner=owner)
    freeze_long_lived("relay")  # the spaCy pipeline and the knowledge base: no long GC pauses later
    monitor_collections("relay")
    relay.start_retrying(application.bot)
    if relay.checkins is not None:
        await relay.checkins.start(checkin_sender(application.bot))
    try:
        await application.bot.set_my_commands(COMMANDS)
    except TelegramError as exc:  # a cosmetic menu must not keep the relay from serving
        log.warning("relay.commands_menu.failed type=%s", type(exc).__name__)
    parked = await relay.outbox.count()
    replayed = 0
    if isinstance(application.update_queue, DurableUpdateQueue):  # what a killed run had not finished
        replayed = await application.update_queue.replay(application.bot)
    log.info("relay.ready bot=%s parked=%d replayed=%d", application.bot.username, parked, replayed)


async def _post_shutdown(application: Application, relay: Relay) -> None:
    await relay.rasa.aclose()
    relay.outbox.close()
    if isinstance(application.update_queue, DurableUpdateQueue):
        application.update_queue.inbox.close()


def run(settings: Settings) -> None:
    """Blocking: run the relay until SIGINT/SIGTERM."""
    configure_logging(settings)
    relay = build_relay(settings)
    relay.checkins = build_checkins(settings)
    application = build_application(settings, relay, MessageClaims(settings.database_url))
    updates = Update.ALL_TYPES
    if settings.telegram_webhook_url:
        secret = str(settings.telegram_webhook_secret) if settings.telegram_webhook_secret else secrets.token_urlsafe(32)
        install_secret_masking([secret])
        path = urlparse(settings.telegram_webhook_url).path.lstrip("/")
        log.info("relay.mode webhook listen=%s:%d", settings.telegram_webhook_listen, settings.telegram_webhook_port)
        application.run_webhook(
            listen=settings.telegram_webhook_listen,
            port=settings.telegram_webhook_port,
            url_path=path,
            webhook_url=settings.telegram_webhook_url,
            secret_token=secret,
            allowed_updates=updates,
        )
    else:
        log.info("relay.mode polling")
        application.run_polling(allowed_updates=updates)

"""Relay logging: one JSON object per line, no message text, and never the bot token.

httpx logs every request URL at INFO, and Telegram puts the bot token in the URL
(`.../bot<token>/sendMessage`), so httpx/httpcore are raised to WARNING and every record is
passed through a filter that masks the token wherever it appears (message, arguments,
tracebacks).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from bot.settings import Settings

REDACTED = "<bot-token>"


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self._secrets = [s for s in secrets if s]

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = self._clean(message), None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
                "event": record.getMessage(),
            },
            ensure_ascii=False,
        )


def configure_logging(settings: Settings, stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets([str(settings.telegram_bot_token or ""), str(settings.rasa_api_token)]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
    for noisy in ("httpx", "httpcore", "telegram.ext.Updater", "apscheduler", "tornado.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

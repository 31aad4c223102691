"""Secrets never printed, whoever prints them.

Our own log lines leave secrets out, but third-party code does not: python-telegram-bot's
`InvalidToken` says "The token `…` was rejected", a driver error may carry a database URL, and
an uncaught exception's traceback goes straight to stderr. So every `python -m bot …` process
(the relay, the Rasa server, the action server, the clinic app, `make run` itself) replaces its
`sys.stdout` and `sys.stderr`, before anything else runs, with streams that mask each configured
secret in everything written: every logger's handler writes through them, and so does the
interpreter's traceback printer.

The secrets are the settings' tokens and keys, the part of the bot token after its colon
(python-telegram-bot prints it alone in some messages), the passwords inside the database
and Redis URLs, and the clinic's alert webhook URL and its path (chat and incident webhooks
carry their secret there). They are read from the settings and from the raw environment, so a
setting that fails to parse does not turn masking off. The relay adds the webhook secret it
generates at start. Values shorter than `MIN_CHARS` are not masked: they would garble the logs and
are not secrets worth the name.
"""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

MASK = "[secret]"
MIN_CHARS = 6


# Where each secret lives: (environment variable, settings field).
PLAIN_SECRETS = (
    ("TELEGRAM_BOT_TOKEN", "telegram_bot_token"),
    ("RASA_API_TOKEN", "rasa_api_token"),
    ("TELEGRAM_WEBHOOK_SECRET", "telegram_webhook_secret"),
    ("SENDER_ID_KEY", "sender_id_key"),
    ("CLINIC_SECRET_KEY", "clinic_secret_key"),
)
URLS_WITH_PASSWORD = (("DATABASE_URL", "database_url"), ("REDIS_URL", "redis_url"))
ALERT_WEBHOOKS = (
    ("CLINIC_ALERT_WEBHOOK_URL", "clinic_alert_webhook_url"),
    ("CLINIC_ESCALATION_WEBHOOK_URL", "clinic_escalation_webhook_url"),
)


def secrets_of(settings: Any) -> list[str]:
    """Every secret value in `settings` worth masking, longest first (a token before its part)."""
    return _collect(lambda _variable, field: str(getattr(settings, field, None) or ""))


def secrets_of_environment(environ: dict[str, str]) -> list[str]:
    """The same secrets from the raw environment (a setting that fails to parse must not turn masking off)."""
    return _collect(lambda variable, _field: environ.get(variable, ""))


def _collect(value: Callable[[str, str], str]) -> list[str]:
    """The secrets, each read by `value(environment variable, settings field)`."""
    values = [value(*where) for where in PLAIN_SECRETS]
    token = value(*PLAIN_SECRETS[0])
    if ":" in token:
        values.append(token.split(":", 1)[1])
    for where in URLS_WITH_PASSWORD:
        password = _password(value(*where))
        if password:
            values += [password, unquote(password)]
    for where in ALERT_WEBHOOKS:
        alert_url = value(*where)
        if alert_url:  # a chat or incident webhook's secret is often its path
            values += [alert_url, _path(alert_url)]
    return _longest_first(values)


def _longest_first(values: list[str]) -> list[str]:
    return sorted({v for v in values if v and len(v) >= MIN_CHARS}, key=len, reverse=True)


def _path(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return parts.path + (f"?{parts.query}" if parts.query else "") if parts.path not in ("", "/") else ""


def _password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


class MaskingStream(io.TextIOBase):
    """A text stream that writes to `stream` with every secret replaced by `MASK`."""

    def __init__(self, stream: TextIO, secrets: list[str]) -> None:
        self._stream = stream
        self.secrets = secrets

    def mask(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def write(self, text: str) -> int:
        self._stream.write(self.mask(text))
        return len(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()

    def fileno(self) -> int:
        return self._stream.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self._stream, "errors", None)

    @property
    def buffer(self) -> Any:
        """Bytes written here bypass the mask; Python's own printers use the text layer."""
        return self._stream.buffer


def install(secrets: list[str]) -> None:
    """Wrap stdout and stderr (idempotent: a second call only adds secrets), and point logging
    handlers that already hold the raw streams at the wrapped ones."""
    for name in ("stdout", "stderr"):
        current = getattr(sys, name)
        if isinstance(current, MaskingStream):
            current.secrets = sorted(set(current.secrets) | set(secrets), key=len, reverse=True)
            continue
        wrapped = MaskingStream(current, secrets)
        setattr(sys, name, wrapped)
        for handler in _stream_handlers():
            if handler.stream is current:
                handler.setStream(wrapped)


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler)]


def install_from_environment() -> None:
    """`install` with the secrets of the settings this process runs on, and of the raw
    environment: settings that cannot be read (a half-configured machine) still mask what the
    environment holds, and the command itself reports what is wrong."""
    import os

    from bot.settings import load_settings

    found = secrets_of_environment(dict(os.environ))
    try:
        found += secrets_of(load_settings())
    except Exception as exc:
        install(found)
        sys.stderr.write(f"note: settings could not be read ({type(exc).__name__}); masking the secrets named in the environment\n")
        return
    install(_longest_first(found))

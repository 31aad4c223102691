"""Secrets never printed, whoever prints them.

Our own log lines leave secrets out, but third-party code does not: python-telegram-bot's
`InvalidToken` says "The token `…` was rejected", a driver error may carry a database URL, and
an uncaught exception's traceback goes straight to stderr. So every `python -m bot …` process
(the relay, the Rasa server, the action server, the clinic app, `make run` itself) replaces its
`sys.stdout` and `sys.stderr`, before anything else runs, with streams that mask each configured
secret in everything written: every logger's handler writes through them, and so does the
interpreter's traceback printer.

The secrets are the settings' tokens and keys, the part of the bot token after its colon
(python-telegram-bot prints it alone in some messages), and the passwords inside the database
and Redis URLs. Values shorter than `MIN_CHARS` are not masked: they would garble the logs and
are not secrets worth the name.
"""

from __future__ import annotations

import io
import logging
import sys
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit

MASK = "[secret]"
MIN_CHARS = 6


def secrets_of(settings: Any) -> list[str]:
    """Every secret value in `settings` worth masking, longest first (a token before its part)."""
    values: list[str] = []
    for name in ("telegram_bot_token", "rasa_api_token", "telegram_webhook_secret", "sender_id_key", "clinic_secret_key"):
        value = getattr(settings, name, None)
        if value:
            values.append(str(value))
    token = str(getattr(settings, "telegram_bot_token", None) or "")
    if ":" in token:
        values.append(token.split(":", 1)[1])
    for name in ("database_url", "redis_url", "clinic_alert_webhook_url"):
        url = getattr(settings, name, None)
        password = _password(str(url)) if url else None
        if password:
            values += [password, unquote(password)]
    return sorted({v for v in values if len(v) >= MIN_CHARS}, key=len, reverse=True)


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
        return self._stream.buffer  # type: ignore[attr-defined]


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
                handler.setStream(wrapped)  # type: ignore[arg-type]


def _stream_handlers() -> list[logging.StreamHandler]:
    loggers = [logging.getLogger(), *(lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger))]
    return [h for lg in loggers for h in lg.handlers if isinstance(h, logging.StreamHandler)]


def install_from_environment() -> None:
    """`install` with the secrets of the settings this process runs on; settings that cannot be
    read (a half-configured machine) mask nothing rather than keep the command from starting."""
    from bot.settings import load_settings

    try:
        settings = load_settings()
    except Exception:  # the command itself will report what is wrong with the configuration
        return
    install(secrets_of(settings))

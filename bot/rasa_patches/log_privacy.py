"""Keep patient words out of the Rasa server's logs.

Rasa's structured log events put the patient's message into some warnings and errors (the
REST channel's `rest.message.received.timeout` / `.failure` carry `text=`, event
deserialisation failures the whole event). Health data must not reach INFO-and-above logs,
so this structlog processor, put first in structlog's chain at the Rasa server's start (bot/rasa_patches),
replaces such fields with their length. Debug logging (off unless an operator turns it on)
is left as Rasa writes it.

Replaces: `rasa.__main__.configure_structlog`, wrapped to put `redact` first again after Rasa sets
structlog's processors.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import structlog

SENSITIVE_KEYS = frozenset({"text", "message", "user_message", "rasa_event", "response", "tracker", "events", "metadata", "slots"})
_INSTALLED = "_crs_redaction"


def redact(_logger: Any, method_name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    if method_name == "debug":
        return event_dict
    for key in SENSITIVE_KEYS & event_dict.keys():
        value = event_dict[key]
        event_dict[key] = f"[redacted: {len(value)} characters]" if isinstance(value, str) else "[redacted]"
    return event_dict


def put_first() -> None:
    """Idempotent: put `redact` first in structlog's processor chain (Rasa configured it at start-up)."""
    processors = list(structlog.get_config().get("processors", []))
    if any(getattr(p, _INSTALLED, False) for p in processors):
        return
    setattr(redact, _INSTALLED, True)
    structlog.configure(processors=[redact, *processors])


def install() -> None:
    """Before Rasa's main runs: Rasa replaces structlog's processors when it configures logging,
    so `redact` is put first again right after it does (and now, for anything configured already)."""
    import rasa.__main__ as rasa_cli

    configure = rasa_cli.configure_structlog
    if not getattr(configure, _INSTALLED, False):

        def configure_then_redact(*args: Any, **kwargs: Any) -> Any:
            result = configure(*args, **kwargs)
            put_first()
            return result

        setattr(configure_then_redact, _INSTALLED, True)
        rasa_cli.configure_structlog = configure_then_redact
    put_first()

"""Rasa's structured log events lose the patient's words before they are written."""

from __future__ import annotations

import structlog

from bot.rasa_patches import log_privacy


def test_message_fields_are_redacted_at_info_and_above() -> None:
    for level in ("info", "warning", "error", "exception"):
        event = log_privacy.redact(None, level, {"event": "rest.message.received.timeout", "text": "I can't breathe", "sender": "x"})
        assert event["text"] == "[redacted: 15 characters]" and event["event"] == "rest.message.received.timeout"
        assert "breathe" not in str(event)
    assert log_privacy.redact(None, "error", {"event": "e", "rasa_event": {"text": "secret"}})["rasa_event"] == "[redacted]"
    assert log_privacy.redact(None, "debug", {"event": "e", "text": "kept for debugging"})["text"] == "kept for debugging"


def test_installed_once_and_first() -> None:
    before = structlog.get_config()["processors"]
    try:
        log_privacy.put_first()
        log_privacy.put_first()
        processors = structlog.get_config()["processors"]
        assert processors[0] is log_privacy.redact
        assert sum(p is log_privacy.redact for p in processors) == 1
    finally:
        structlog.configure(processors=before)


def test_redaction_survives_rasa_configuring_structlog_after_it_is_installed() -> None:
    """`python -m bot rasa` installs it before Rasa's main, which then replaces structlog's processors."""
    import logging

    import rasa.__main__ as rasa_cli

    log_privacy.install()
    rasa_cli.configure_structlog(logging.DEBUG)
    assert structlog.get_config()["processors"][0] is log_privacy.redact

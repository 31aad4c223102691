"""Relay texts come from their owning files; sender ids are pseudonymous; logs hide secrets."""

from __future__ import annotations

import io
import json
import logging

import yaml
from starlette.datastructures import Secret

from bot import PROJECT_ROOT
from bot.settings import Settings
from bot.telegram.identity import sender_id
from bot.telegram.logs import REDACTED, configure_logging
from bot.telegram.texts import load_texts


def test_safety_texts_are_the_domain_responses() -> None:
    texts = load_texts()
    responses = yaml.safe_load((PROJECT_ROOT / "domain.yml").read_text())["responses"]
    assert texts.failsafe == responses["utter_failsafe"][0]["text"]
    assert texts.failsafe_emergency == responses["utter_failsafe_emergency"][0]["text"]
    assert texts.emergency_signs == responses["utter_faq_emergency_signs"][0]["text"]
    for text in (texts.failsafe, texts.failsafe_emergency, texts.emergency_signs, texts["non_text"], texts["help"]):
        assert "911" in text


def test_sender_ids_are_stable_pseudonyms() -> None:
    a = sender_id(123456789, "key-1")
    assert a == sender_id(123456789, "key-1") and a.startswith("tg-")
    assert "123456789" not in a
    assert a != sender_id(123456788, "key-1") and a != sender_id(123456789, "key-2")


def test_logs_are_json_and_never_show_the_token() -> None:
    token = "5555:AAAA-very-secret"
    settings = Settings("sqlite://", 1, 2, 3, Secret("api-secret"), Secret(token))
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging(settings, stream)
        logging.getLogger("httpx").warning("HTTP Request: POST https://api.telegram.org/bot%s/sendMessage", token)
        try:
            raise RuntimeError(f"failed with api-secret and {token}")
        except RuntimeError:
            logging.getLogger("bot.telegram").exception("relay.error")
        logging.getLogger("httpx").info("HTTP Request: POST https://api.telegram.org/bot%s/getUpdates", token)
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    lines = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    output = stream.getvalue()
    assert token not in output and "AAAA-very-secret" not in output and "api-secret" not in output
    assert REDACTED in output
    assert len(lines) == 2, "httpx INFO request lines are not logged"


def test_bot_api_base_url_is_accepted_as_root_or_as_ptb_base_url() -> None:
    """SPEC gives TELEGRAM_API_BASE_URL as python-telegram-bot's base_url (ending in /bot);
    earlier releases took the server root. Both forms give the same URLs."""
    from bot.telegram.app import bot_api_urls

    expected = ("http://127.0.0.1:8081/bot", "http://127.0.0.1:8081/file/bot")
    for configured in ("http://127.0.0.1:8081", "http://127.0.0.1:8081/", "http://127.0.0.1:8081/bot", "http://127.0.0.1:8081/bot/"):
        assert bot_api_urls(configured) == expected, configured
    assert bot_api_urls("https://tg.example/api/bot")[0] == "https://tg.example/api/bot"

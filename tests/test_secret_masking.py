"""Secrets masked in everything a process writes, whoever writes it."""

from __future__ import annotations

import dataclasses
import io
import logging
import subprocess
import sys

from starlette.datastructures import Secret

from bot import PROJECT_ROOT
from bot.secret_masking import MASK, MaskingStream, secrets_of
from bot.settings import load_settings


def test_secrets_of_settings_include_url_passwords_and_the_token_part() -> None:
    settings = dataclasses.replace(
        load_settings(),
        telegram_bot_token=Secret("12345:AAF-telegram-secret-part"),
        database_url="postgresql://crs:db%2Fpass-word9@db.example:5432/crs",
        redis_url=Secret("redis://:redis-pass-77@cache:6379/0"),
    )
    found = secrets_of(settings)
    assert {"12345:AAF-telegram-secret-part", "AAF-telegram-secret-part", "db%2Fpass-word9", "db/pass-word9", "redis-pass-77"} <= set(found)
    assert str(settings.rasa_api_token) in found
    assert found.index("12345:AAF-telegram-secret-part") < found.index("AAF-telegram-secret-part"), "longest first"


def test_a_logger_and_a_traceback_written_through_the_stream_are_masked() -> None:
    raw = io.StringIO()
    stream = MaskingStream(raw, ["s3cret-token-value"])
    logger = logging.getLogger("third.party.example")
    handler = logging.StreamHandler(stream)
    logger.addHandler(handler)
    try:
        try:
            raise RuntimeError("The token `s3cret-token-value` was rejected by the server.")
        except RuntimeError:
            logger.exception("start-up failed")
    finally:
        logger.removeHandler(handler)
    assert "s3cret-token-value" not in raw.getvalue()
    assert MASK in raw.getvalue() and "rejected by the server" in raw.getvalue()


def test_an_uncaught_exception_of_a_bot_command_is_masked(tmp_path) -> None:  # noqa: ANN001
    """A real `python -m bot` process: the interpreter's own traceback printer writes through the mask."""
    token = "98765:uncaught-secret-token"
    code = (
        "import sys; from bot.secret_masking import install_from_environment as i; i(); "
        f"print('token is {token}'); raise SystemExit(sys.exit(str(ValueError('bad {token}'))))"
    )
    env = {"PATH": "/usr/bin:/bin", "TELEGRAM_BOT_TOKEN": token, "HOME": str(tmp_path), "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert "token is" in output and "uncaught-secret-token" not in output and MASK in output


def test_the_environment_is_masked_even_when_the_settings_cannot_be_read() -> None:
    from bot.secret_masking import secrets_of_environment

    env = {
        "TELEGRAM_BOT_TOKEN": "777:env-only-token-part",
        "DATABASE_URL": "postgresql://crs:env-db-password@db/crs",
        "CLINIC_ALERT_WEBHOOK_URL": "https://chat.example/hooks/T000/B000/XXXXSECRET",
        "TELEGRAM_SEND_RATE": "not-a-number",  # the kind of setting that makes load_settings fail
    }
    found = secrets_of_environment(env)
    assert {"777:env-only-token-part", "env-only-token-part", "env-db-password", "/hooks/T000/B000/XXXXSECRET"} <= set(found)
    assert "not-a-number" not in found


def test_a_process_with_a_broken_setting_still_masks(tmp_path) -> None:  # noqa: ANN001
    token = "98765:broken-settings-token"
    code = "import os, bot.secret_masking as m; m.install_from_environment(); print('token is', os.environ['TELEGRAM_BOT_TOKEN'])"
    env = {"PATH": "/usr/bin:/bin", "TELEGRAM_BOT_TOKEN": token, "TELEGRAM_SEND_RATE": "abc", "HOME": str(tmp_path)}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert "token is [secret]" in done.stdout, done.stdout + done.stderr
    assert "broken-settings-token" not in done.stdout + done.stderr

"""The outgoing limiter: per-chat pacing for private chats, retries that drop nothing."""

from __future__ import annotations

import time

import pytest
from telegram.error import BadRequest, NetworkError, TimedOut

from bot.telegram.limits import PatientChatRateLimiter


async def _request(limiter: PatientChatRateLimiter, callback, endpoint: str = "sendMessage", chat_id: int = 5):  # noqa: ANN001, ANN202
    return await limiter.process_request(callback, (), {}, endpoint, {"chat_id": chat_id, "text": "x"}, None)


async def test_private_chat_burst_then_paced() -> None:
    limiter = PatientChatRateLimiter(chat_burst=3, chat_period=1.5)
    stamps: list[float] = []

    async def send() -> bool:
        stamps.append(time.monotonic())
        return True

    start = time.monotonic()
    for _ in range(5):
        await _request(limiter, send)
    offsets = [s - start for s in stamps]
    assert max(offsets[:3]) < 0.2, "a short burst goes out at once"
    assert offsets[4] >= 0.8, "then about one message per period/burst"


async def test_chat_actions_and_other_chats_are_not_held_back() -> None:
    limiter = PatientChatRateLimiter(chat_burst=1, chat_period=5)

    async def send() -> bool:
        return True

    start = time.monotonic()
    await _request(limiter, send)
    await _request(limiter, send, endpoint="sendChatAction")
    await _request(limiter, send, chat_id=6)
    assert time.monotonic() - start < 0.5


async def test_network_errors_are_retried_until_sent() -> None:
    limiter = PatientChatRateLimiter(first_backoff=0.01)
    attempts = 0

    async def flaky() -> bool:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise TimedOut() if attempts == 1 else NetworkError("connection reset")
        return True

    assert await _request(limiter, flaky) is True
    assert attempts == 3


@pytest.mark.parametrize("error", [BadRequest("chat not found"), NetworkError("down for good")])
async def test_hopeless_requests_give_up(error: Exception) -> None:
    limiter = PatientChatRateLimiter(first_backoff=0.001, network_retries=2)
    attempts = 0

    async def failing() -> bool:
        nonlocal attempts
        attempts += 1
        raise error

    with pytest.raises(type(error)):
        await _request(limiter, failing)
    assert attempts == (1 if isinstance(error, BadRequest) else 3)


async def test_typing_does_not_use_the_message_budget() -> None:
    """`make soak` found it: at 30 incoming messages/s, chat actions in the 30/s budget starved the replies."""
    limiter = PatientChatRateLimiter(overall_max_rate=5, overall_time_period=1)

    async def send() -> bool:
        return True

    for chat in range(5):  # the whole budget of this second
        await _request(limiter, send, chat_id=100 + chat)
    start = time.monotonic()
    for chat in range(20):
        await _request(limiter, send, endpoint="sendChatAction", chat_id=200 + chat)
    assert time.monotonic() - start < 0.3, "typing is not held back by a spent message budget"
    await _request(limiter, send, chat_id=300)
    assert time.monotonic() - start >= 0.1, "a message still is (the check can fail)"


@pytest.mark.parametrize(("rate", "slow"), [(10.0, True), (200.0, False)])
async def test_overall_budget_comes_from_the_setting(tmp_path, rate: float, slow: bool) -> None:  # noqa: ANN001
    """TELEGRAM_SEND_RATE reaches the application's limiter: 25 replies to 25 chats take ≥ 1.5 s at 10/s."""
    from starlette.datastructures import Secret

    from bot.servers import isolated_settings
    from bot.telegram.app import build_application, build_relay

    settings = isolated_settings(tmp_path, telegram_bot_token=Secret("1:limits"), telegram_send_rate=rate)
    limiter = build_application(settings, build_relay(settings)).bot.rate_limiter
    assert isinstance(limiter, PatientChatRateLimiter)
    await limiter.initialize()

    async def send() -> bool:
        return True

    start = time.monotonic()
    for chat in range(25):
        await _request(limiter, send, chat_id=1000 + chat)
    elapsed = time.monotonic() - start
    assert (elapsed >= 1.4) if slow else (elapsed < 0.5), f"{elapsed:.2f} s at {rate:g}/s"

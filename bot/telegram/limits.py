"""Outgoing Telegram traffic: rate limits, and retries so no reply is dropped.

python-telegram-bot's `AIORateLimiter` covers Telegram's overall limit (~30 messages/s) and
groups, and retries `RetryAfter`. Patients write in private chats, where Telegram asks for
about one message per second per chat; and a network error or timeout towards Telegram must
not lose a reply that may say "call 911". This subclass adds both:

* a per-chat limiter for private chats (a burst of `chat_burst` messages, then one per second),
* retries of `NetworkError`/`TimedOut` with exponential backoff (a retried send whose first
  attempt actually arrived shows twice; a duplicate is better than a missing 911 advice),
* "typing…" (`sendChatAction`) outside both budgets: it is not a message, and a late one is useless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from aiolimiter import AsyncLimiter
from telegram.error import BadRequest, NetworkError, RetryAfter
from telegram.ext import AIORateLimiter

log = logging.getLogger(__name__)


class PatientChatRateLimiter(AIORateLimiter):
    def __init__(
        self,
        chat_burst: int = 3,
        chat_period: float = 3.0,
        network_retries: int = 6,
        first_backoff: float = 0.5,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("max_retries", 5)
        super().__init__(**kwargs)
        self._chat_burst = chat_burst
        self._chat_period = chat_period
        self._network_retries = network_retries
        self._first_backoff = first_backoff
        self._chat_limiters: dict[int, AsyncLimiter] = {}

    def _chat_limiter(self, chat_id: int) -> AsyncLimiter:
        if len(self._chat_limiters) > 4096:  # forget idle chats (their bucket is full again)
            for key, idle in list(self._chat_limiters.items()):
                if idle.has_capacity(idle.max_rate):
                    del self._chat_limiters[key]
        limiter = self._chat_limiters.get(chat_id)
        if limiter is None:
            limiter = self._chat_limiters[chat_id] = AsyncLimiter(self._chat_burst, self._chat_period)
        return limiter

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        if endpoint == "sendChatAction":
            # "typing…" is not a message and is worth nothing late: it bypasses the message budget.
            # Counted against Telegram's ~30 messages/s it took the budget the replies needed at
            # the ceiling of incoming messages, and the queue never drained (found by `make soak`).
            return await callback(*args, **kwargs)
        chat_id = data.get("chat_id")
        with contextlib.suppress(TypeError, ValueError):
            chat_id = int(chat_id)  # type: ignore[arg-type]
        private = isinstance(chat_id, int) and chat_id > 0 and endpoint.startswith("send")
        delay = self._first_backoff
        for attempt in range(self._network_retries + 1):
            try:
                if private:
                    async with self._chat_limiter(chat_id):  # type: ignore[arg-type]
                        return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
                return await super().process_request(callback, args, kwargs, endpoint, data, rate_limit_args)
            except (RetryAfter, BadRequest):
                raise  # RetryAfter: the parent class already waited and retried; BadRequest will not get better
            except NetworkError as exc:  # includes TimedOut
                if attempt == self._network_retries:
                    log.error("telegram.request.failed endpoint=%s error=%s attempts=%d", endpoint, type(exc).__name__, attempt + 1)
                    raise
                log.warning("telegram.request.retry endpoint=%s error=%s wait=%.1fs", endpoint, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

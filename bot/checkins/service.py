"""The check-ins inside the Telegram relay: the scheduler's loop, the chat's link to its
enrolment, the answers. Every database call runs in a thread and a failure is logged, never
raised into a patient's message: check-ins must not get in the way of answering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import Engine

from bot.checkins import scheduler as sched
from bot.checkins.schedule import CheckinConfig, load_checkin_config
from bot.checkins.store import create_checkin_tables
from bot.clinic import worklist

log = logging.getLogger("bot.checkins")


class CheckinService:
    def __init__(
        self,
        engine: Engine,
        tracking: worklist.Tracking,
        owner: str,
        default_zone: str,
        config: CheckinConfig | None = None,
        send_rate: float | None = None,
    ) -> None:
        self.engine, self.tracking, self.owner, self.default_zone, self.send_rate = engine, tracking, owner, default_zone, send_rate
        self.config = config or load_checkin_config()
        self.texts = sched.Texts.of(self.config)
        self.scheduler: sched.CheckinScheduler | None = None
        self._task: asyncio.Task | None = None

    async def start(self, send: sched.Send) -> None:
        await asyncio.to_thread(create_checkin_tables, self.engine)
        self.scheduler = sched.CheckinScheduler(
            self.engine, self.config, self.texts, send, self.owner, self.tracking, self.default_zone, send_rate=self.send_rate
        )
        self._task = asyncio.create_task(self._loop(), name="checkins")

    async def _loop(self) -> None:
        while True:
            try:
                done = await self.scheduler.tick()  # type: ignore[union-attr]
                if any(done.values()):
                    log.info("checkins.tick %s", " ".join(f"{k}={v}" for k, v in done.items()))
            except Exception as exc:  # the database away a moment: the next round tries again
                log.error("checkins.tick.failed type=%s", type(exc).__name__)
            await asyncio.sleep(self.config.tick_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _quietly(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.to_thread(call, *args)
        except Exception as exc:  # noqa: BLE001 - logged; the patient's message goes on regardless
            log.error("checkins.%s.failed type=%s", getattr(call, "__name__", "call"), type(exc).__name__)
            return None

    async def linked(self, code: str, chat_id: int, sender_id: str) -> None:
        if await self._quietly(sched.link_chat, self.engine, code, chat_id, sender_id):
            log.info("checkins.linked")

    async def answered(self, chat_id: int) -> None:
        if self.scheduler is not None:
            await self._quietly(self.scheduler.answered, chat_id, time.time())

    async def button(self, chat_id: int, data: str, reply: Callable[[str], Awaitable[None]]) -> None:
        """checkin:none / checkin:yes. "Yes" says 911 first, then tells the clinic."""
        if data == sched.BUTTON_YES:
            await reply(self.texts.answer_yes)
            await self._quietly(sched.reported_emergency, self.engine, self.tracking, chat_id, time.time())
        else:
            await reply(self.texts.answer_none)
            await self.answered(chat_id)

    async def command(self, chat_id: int, argument: str) -> str:
        """`/checkins off|on`."""
        if argument not in ("off", "on"):
            return self.texts.checkins_usage
        changed = await self._quietly(sched.set_opted_out, self.engine, chat_id, argument == "off")
        if not changed:
            return self.texts.not_enrolled
        return self.texts.checkins_off if argument == "off" else self.texts.checkins_on

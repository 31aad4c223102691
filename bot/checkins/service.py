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

from bot.checkins import neuro
from bot.checkins import scheduler as sched
from bot.checkins.neuro_chat import NeuroChat
from bot.checkins.schedule import CheckinConfig, load_checkin_config
from bot.checkins.store import create_checkin_tables
from bot.clinic import worklist

log = logging.getLogger("bot.checkins")
# a check-in button's answer to the relay: (Rasa intent message, metadata `checkin`)
Reply = Callable[[str, dict[str, Any]], Awaitable[None]]
ANSWER_WAIT_S = 1.5  # a reply waits at most this long to learn whether it answers a check-in


class CheckinService:
    def __init__(
        self,
        engine: Engine,
        tracking: worklist.Tracking,
        owner: str,
        default_zone: str,
        config: CheckinConfig | None = None,
        send_rate: float | None = None,
        neuro_config: neuro.NeuroConfig | None = None,
    ) -> None:
        self.engine, self.tracking, self.owner, self.default_zone, self.send_rate = engine, tracking, owner, default_zone, send_rate
        self.config = config or load_checkin_config()
        self.texts = sched.Texts.of(self.config)
        # the caregiver neuro check; it answers the check-in that offered it
        self.neuro = NeuroChat(engine, tracking, neuro_config or neuro.load_neuro_config(), self.answered)
        self.scheduler: sched.CheckinScheduler | None = None
        self._task: asyncio.Task | None = None

    async def start(self, send: sched.Send) -> None:
        await asyncio.to_thread(create_checkin_tables, self.engine)
        self.neuro.send = send
        self.scheduler = sched.CheckinScheduler(
            self.engine, self.config, self.texts, send, self.owner, self.tracking, self.default_zone, send_rate=self.send_rate,
            neuro_button=self.neuro.config.texts["button_start"],
        )  # fmt: skip
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

    def question(self, asked: dict[str, Any]) -> dict[str, Any]:
        """What a yes or no may answer (message metadata `checkin`): the check-in's emergency
        screen, so a typed or tapped "yes" is an emergency through the triage (action_answer_yes_no)."""
        return {"question": "emergency_check", "signs": list(self.config.emergency_screen), **asked}

    async def answered(self, chat_id: int) -> dict[str, Any] | None:
        """The chat wrote: its open check-ins are answered. Returns `question()` of its latest
        check-in still open for a yes or no (None also when the database is slow: the message
        must not wait for it)."""
        if self.scheduler is None:
            return None
        scheduler = self.scheduler

        def mark_and_ask() -> dict[str, Any] | None:
            now = time.time()
            scheduler.answered(chat_id, now)
            return scheduler.asked(chat_id, now)

        try:
            asked = await asyncio.wait_for(self._quietly(mark_and_ask), ANSWER_WAIT_S)
        except TimeoutError:
            log.warning("checkins.answered.slow")
            return None
        return self.question(asked) if asked else None

    def is_clear_yes(self, text: str) -> bool:
        return self.config.is_clear_yes(text)

    async def button(self, chat_id: int, data: str, reply: Reply) -> None:
        """checkin:yes / checkin:none go to the triage as a yes or no to the check-in's question.
        A yes also opens the clinic's emergency item directly, while the triage answers (911)."""
        asked = await self.answered(chat_id) or self.question({})  # the tapped check-in's question, even past its window
        if data == sched.BUTTON_YES:
            told = asyncio.create_task(self._quietly(sched.reported_emergency, self.engine, self.tracking, chat_id, time.time()))
            await reply("/affirm", asked)
            await told
        else:
            await reply("/deny", asked)

    async def command(self, chat_id: int, argument: str) -> str:
        """`/checkins off|on`."""
        if argument not in ("off", "on"):
            return self.texts.checkins_usage
        changed = await self._quietly(sched.set_opted_out, self.engine, chat_id, argument == "off")
        if not changed:
            return self.texts.not_enrolled
        return self.texts.checkins_off if argument == "off" else self.texts.checkins_on

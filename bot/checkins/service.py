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
from bot.checkins.schedule import CheckinConfig, load_checkin_config
from bot.checkins.store import create_checkin_tables
from bot.clinic import worklist
from bot.nlu.knowledge import load_knowledge_base

log = logging.getLogger("bot.checkins")
# the relay's way to hand the triage an escalated neuro check (message metadata `neuro_check`)
Report = Callable[[dict[str, Any]], Awaitable[None]]


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
        self.neuro = neuro_config or neuro.load_neuro_config()
        self.send: sched.Send | None = None
        self.scheduler: sched.CheckinScheduler | None = None
        self._task: asyncio.Task | None = None

    async def start(self, send: sched.Send) -> None:
        await asyncio.to_thread(create_checkin_tables, self.engine)
        self.send = send
        self.scheduler = sched.CheckinScheduler(
            self.engine, self.config, self.texts, send, self.owner, self.tracking, self.default_zone, send_rate=self.send_rate,
            neuro_button=self.neuro.texts["button_start"],
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

    # ------------------------------------------------------------------ the caregiver neuro check
    async def neuro_start(self, chat_id: int, sender_id: str) -> None:
        """`/neurocheck` (or the check-in's button): the disclaimer, then the first question."""
        texts = self.neuro.texts
        try:
            step = await asyncio.to_thread(neuro.start, self.engine, self.neuro, chat_id, sender_id, time.time())
        except Exception as exc:  # noqa: BLE001 - the caregiver still gets the 911 line
            log.error("checkins.neuro_start.failed type=%s", type(exc).__name__)
            await self._say(chat_id, texts["unavailable"])
            return
        await self._say(chat_id, texts["intro"].format(count=len(self.neuro.items)))
        await self._ask(chat_id, step)

    async def neuro_button(self, chat_id: int, sender_id: str, data: str, report: Report) -> None:
        """One tap of the caregiver. An item right before and not right now: the triage first
        (911 advice, the clinic's emergency), then which item it was."""
        if data == neuro.START:
            await self.neuro_start(chat_id, sender_id)
            return
        parsed = neuro.parse(data)
        if parsed is None:
            return
        texts = self.neuro.texts
        try:
            step = await asyncio.to_thread(neuro.answer, self.engine, self.neuro, self.tracking, *parsed, time.time())
        except Exception as exc:  # noqa: BLE001
            log.error("checkins.neuro_answer.failed type=%s", type(exc).__name__)
            await self._say(chat_id, texts["unavailable"])
            return
        if step is None:  # a double tap, or an old question's button
            return
        log.info("checkins.neuro step=%s answered=%d", step.kind, step.index)
        if step.kind == "question":
            await self._ask(chat_id, step)
            return
        if step.kind in ("stopped", "expired"):
            await self._say(chat_id, texts[step.kind])
            return
        await self.answered(chat_id)  # a finished neuro check answers the check-in that offered it
        count = len(self.neuro.items)
        if step.kind == "escalated":
            await report(neuro.findings(self.neuro, step))
            item = self.neuro.item(step.newly_failed or "")
            label = load_knowledge_base().symptoms[item.symptom].label if item else "confusion"
            await self._say(chat_id, texts["worse"].format(item=item.name if item else step.newly_failed, label=label))
        elif step.baseline_score is None:
            failed = ", ".join(i.name for i in self.neuro.items if i.id in step.failed)
            key = "baseline_not_full" if step.failed else "baseline_full"
            await self._say(chat_id, texts[key].format(score=step.score, max=count, failed=failed))
        else:
            key = "same" if step.score == step.baseline_score else "better"
            await self._say(chat_id, texts[key].format(score=step.score, max=count, baseline=step.baseline_score))

    async def _ask(self, chat_id: int, step: neuro.Step) -> None:
        texts, item = self.neuro.texts, self.neuro.items[step.index]
        text = texts["question"].format(number=step.index + 1, count=len(self.neuro.items), ask=item.ask)
        data = f"{neuro.PREFIX}{step.check_id}:{step.index}:"
        buttons = [
            (texts["button_pass"], data + neuro.PASS),
            (texts["button_fail"], data + neuro.FAIL),
            (texts["button_stop"], data + neuro.STOP),
        ]
        await self._say(chat_id, text, buttons)

    async def _say(self, chat_id: int, text: str, buttons: list[tuple[str, str]] | None = None) -> None:
        if self.send is not None:
            await self.send(chat_id, text, buttons or [])

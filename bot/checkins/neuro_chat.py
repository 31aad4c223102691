"""The caregiver neuro check as a chat (`/neurocheck`): questions with buttons, then what the
result means. Scoring and storage are neuro.py's; this is what the caregiver reads and when.

Safety first in every path: an item right before and not right now goes to the triage before
anything else is said (911 advice, the clinic's emergency); a database that fails or is slow
gets the `unavailable` text, which carries the 911 line, never silence.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import Engine

from bot.checkins import neuro
from bot.checkins.scheduler import Send
from bot.clinic import worklist
from bot.clinical.knowledge import load_knowledge_base

log = logging.getLogger("bot.checkins")
# the relay's way to hand the triage an escalated neuro check (message metadata `neuro_check`)
Report = Callable[[dict[str, Any]], Awaitable[None]]
DB_WAIT_S = 5.0  # a tap waits this long for the database, then the caregiver hears `unavailable` (with 911)


class NeuroChat:
    def __init__(
        self, engine: Engine, tracking: worklist.Tracking, config: neuro.NeuroConfig, answered: Callable[[int], Awaitable[Any]]
    ) -> None:
        self.engine, self.tracking, self.config, self.answered = engine, tracking, config, answered
        self.send: Send | None = None  # set when the relay starts

    async def start(self, chat_id: int, sender_id: str) -> None:
        """`/neurocheck` (or the check-in's button): the disclaimer, then the first question."""
        step = await self._db(neuro.start, self.engine, self.config, chat_id, sender_id, time.time())
        if step is None:
            await self._say(chat_id, self.config.texts["unavailable"])
            return
        await self._say(chat_id, self.config.texts["intro"].format(count=len(self.config.items)))
        await self._ask(chat_id, step)
        await self.answered(chat_id)  # someone is there: the check-in that offered it is answered

    async def button(self, chat_id: int, sender_id: str, data: str, report: Report) -> None:
        """One tap of the caregiver."""
        if data == neuro.START:
            await self.start(chat_id, sender_id)
            return
        parsed = neuro.parse(data)
        if parsed is None:
            return
        texts = self.config.texts
        try:
            step = await asyncio.wait_for(
                asyncio.to_thread(neuro.answer, self.engine, self.config, self.tracking, *parsed, time.time()), DB_WAIT_S
            )
        except Exception as exc:  # noqa: BLE001 - slow or failing database: the tap again is answered the same (neuro.answer)
            log.error("checkins.neuro_answer.failed type=%s", type(exc).__name__)
            await self._say(chat_id, texts["unavailable"])
            return
        if step is None:  # a tap of an earlier question, or one another replica is recording
            return
        log.info("checkins.neuro step=%s answered=%d", step.kind, step.index)
        if step.kind == "question":
            await self._ask(chat_id, step)
        elif step.kind in ("stopped", "expired"):
            await self._say(chat_id, texts[step.kind])
        elif step.kind == "escalated":
            await report(neuro.findings(self.config, step))  # the triage's 911 advice first
            item = self.config.item(step.newly_failed or "")
            label = load_knowledge_base().symptoms[item.symptom].label if item else "confusion"
            await self._say(chat_id, texts["worse"].format(item=item.name if item else step.newly_failed, label=label))
        else:
            await self._say(chat_id, self._result(step))

    def _result(self, step: neuro.Step) -> str:
        texts, count = self.config.texts, len(self.config.items)
        if step.baseline_score is None:
            failed = ", ".join(self.config.item(i).name if self.config.item(i) else i for i in step.failed)  # type: ignore[union-attr]
            key = "baseline_not_full" if step.failed else "baseline_full"
            return texts[key].format(score=step.score, max=count, failed=failed)
        key = "same" if step.score == step.baseline_score else "better"
        return texts[key].format(score=step.score, max=count, baseline=step.baseline_score)

    async def _ask(self, chat_id: int, step: neuro.Step) -> None:
        texts, item = self.config.texts, self.config.item(step.item_id)
        ask = item.ask if item else f"({step.item_id})"  # an item since removed from the file: the check goes on
        text = texts["question"].format(number=step.index + 1, count=len(self.config.items), ask=ask)
        data = f"{neuro.PREFIX}{step.check_id}:{step.index}:"
        buttons = [
            (texts["button_pass"], data + neuro.PASS),
            (texts["button_fail"], data + neuro.FAIL),
            (texts["button_stop"], data + neuro.STOP),
        ]
        await self._say(chat_id, text, buttons)

    async def _db(self, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return await asyncio.wait_for(asyncio.to_thread(call, *args), DB_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - logged; the caregiver gets the `unavailable` text
            log.error("checkins.neuro.failed type=%s", type(exc).__name__)
            return None

    async def _say(self, chat_id: int, text: str, buttons: list[tuple[str, str]] | None = None) -> None:
        if self.send is None:  # the relay did not start the check-ins: say so loudly, the relay's error handler answers
            raise RuntimeError("check-ins not started")
        await self.send(chat_id, text, buttons or [])

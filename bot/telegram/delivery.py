"""Delivery: a message to Rasa and its answer back to the patient, never silent, nothing lost.

For each patient message (handed over by handlers.py)
1. takes the chat's place in line (messages of one chat are handled in arrival order),
2. first hands Rasa any earlier messages of this chat that are still parked (see outbox.py),
3. posts the message to Rasa's `relay` channel while "typing…" shows,
4. sends Rasa's replies (buttons as an inline keyboard, long texts split), or, if Rasa is down,
   failing or slower than `soft_timeout`, the fail-safe reply at once — "call 911 now" when
   the message itself names an emergency sign — and parks the message for later delivery.
   A slow answer that still arrives is sent afterwards, as a reply to the patient's message.

Logs carry chat pseudonyms, sizes and outcomes, never message text.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import TelegramError

from bot.telegram.dedup import RelayClaims, Verdict
from bot.telegram.identity import sender_id
from bot.telegram.ordering import ChatLocks
from bot.telegram.outbox import Outbox
from bot.telegram.rasa_client import RasaClient, RasaUnavailable
from bot.telegram.splitting import split_message
from bot.telegram.texts import RelayTexts

log = logging.getLogger("bot.telegram")
_LOG_SALT = secrets.token_bytes(16)  # new at each start: log lines of a run correlate, nothing links them to a record


def log_ref(sender: str) -> str:
    """What the logs call a conversation: not its sender id (that would link log lines to the stored record)."""
    return hashlib.blake2s(sender.encode(), key=_LOG_SALT, digest_size=4).hexdigest()


CALLBACK_DATA_LIMIT = 64  # bytes, Telegram's limit for inline button data
TYPING_DELAY = 0.3  # answers faster than this need no "typing…" (saves rate budget)
TYPING_REFRESH = 4.5  # Telegram shows "typing…" for about 5 s


@dataclass
class Inbound:
    """One message on its way to Rasa."""

    chat_id: int
    sender: str
    text: str
    message_id: str
    metadata: dict[str, Any]
    reply_to: int | None  # the patient's Telegram message, to thread a late answer to it
    fallback: str | None = None  # what to answer if Rasa cannot (default: the fail-safe)
    received: float = field(default_factory=time.monotonic)
    answered: bool = False  # the patient already got a reply (fail-safe or Rasa's)
    retry: bool = False  # Rasa may have it already (a copy taken over): do not process it twice
    reply_ready: bool = False  # Rasa has answered; the reply may still wait for Telegram's send budget
    # asked under the chat's lock before Rasa gets it: what the message answers (an open check-in), as metadata
    probe: Callable[[], Awaitable[dict[str, Any] | None]] | None = None


class Delivery:
    """The relay's state and its path to Rasa and back; the Telegram handlers (handlers.Relay) build on it."""

    def __init__(
        self,
        texts: RelayTexts,
        rasa: RasaClient,
        outbox: Outbox,
        sender_key: str,
        soft_timeout: float = 8.0,
        is_emergency: Callable[[str], bool] | None = None,
    ) -> None:
        self.texts = texts
        self.rasa = rasa
        self.outbox = outbox
        self.soft_timeout = soft_timeout
        self.is_emergency = is_emergency
        self._sender_key = sender_key
        self._locks = ChatLocks()
        self._long_payloads: dict[str, str] = {}
        self._tasks: set[asyncio.Task] = set()
        self._retry_task: asyncio.Task | None = None
        self._prune_task: asyncio.Task | None = None
        # each message handled once across relay instances, never dropped unanswered (dedup.py)
        self.claims: RelayClaims | None = None
        self.checkins: Any = None  # bot.checkins.service.CheckinService when enrolled patients get check-ins

    def _sender(self, chat_id: int) -> str:
        return sender_id(chat_id, self._sender_key)

    def _spawn(self, coroutine: Any) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def handle(self, bot: Bot, item: Inbound) -> None:
        """Relay one message; the patient gets an answer within `soft_timeout` whatever happens."""
        await self._answer_in_time(bot, item, self._spawn(self._process(bot, item)))

    async def _answer_in_time(self, bot: Bot, item: Inbound, work: asyncio.Task) -> None:
        done, _ = await asyncio.wait({work}, timeout=self.soft_timeout)
        # Rasa's reply ready but queued for Telegram's send budget: a fail-safe would queue behind
        # it and double the sends, so that a backlog (after an outage) could never drain.
        if not done and not item.answered and not item.reply_ready:
            log.warning("relay.slow chat=%s waited=%.1fs", log_ref(item.sender), time.monotonic() - item.received)
            await self._fail_safe(bot, item)
        await work

    async def _process(self, bot: Bot, item: Inbound) -> None:
        async with self._locks.hold(item.chat_id):
            if not await self._claim(item):
                return
            if item.probe is not None:
                found = await item.probe()
                if found:
                    item.metadata["telegram"]["checkin"] = found
                    if item.fallback is None and self.checkins.is_clear_yes(item.text):  # Rasa away: a yes to it still says 911
                        item.fallback = self.texts.failsafe_emergency
            typing = self._spawn(self._keep_typing(bot, item.chat_id))
            alive = self._spawn(self.claims.keep_alive(item.message_id)) if self.claims is not None else None
            done = False  # the message is safe: stored by Rasa or parked here
            try:
                still_parked = await self._flush_chat(bot, item.chat_id)
                if still_parked:
                    await self._park(bot, item, "earlier messages still waiting")
                    done = True
                    return
                try:
                    reply = await self.rasa.send(item.sender, item.text, item.message_id, item.metadata, retry=item.retry)
                except RasaUnavailable as exc:
                    await self._park(bot, item, str(exc))
                    done = True
                    return
                done = item.reply_ready = True
                late = item.answered
                await self._deliver(bot, item.chat_id, reply.messages, reply_to=item.reply_to if late else None, item=item)
                if not item.answered:  # Rasa had nothing to say (or had it already): never silent
                    await self._fail_safe(bot, item)
                log.info(
                    "relay.answered chat=%s replies=%d ms=%.0f late=%s",
                    log_ref(item.sender),
                    len(reply.messages),
                    (time.monotonic() - item.received) * 1000,
                    late,
                )
            finally:
                typing.cancel()
                if alive is not None:
                    alive.cancel()
                # done not before the message is safe: a copy (or this relay's replay after a kill) finishes it
                columns = [column for column, now in (("answered_at", item.answered), ("done_at", done)) if now]
                if self.claims is not None and columns:
                    await self.claims.mark(item.message_id, *columns)

    async def _claim(self, item: Inbound) -> bool:
        """True when this relay must handle the message; False for a copy of one that is safe
        (stored or parked) or that a live relay is finishing. The caller holds the chat's lock."""
        if self.claims is None:
            return True
        claim = await self.claims.check(item.message_id)
        if claim.verdict is Verdict.FIRST:
            return True
        if claim.verdict is Verdict.DONE:
            item.answered = True
            return False
        # Held and not done. If the patient had no reply yet, the handler's timer gives the
        # fail-safe while this copy waits (a duplicate reply beats a silent wait).
        item.answered = item.answered or claim.answered
        taken = await self.claims.wait_or_take_over(item.message_id, claim)
        if taken is None:
            item.answered = True
            return False
        # Its holder died before the message was safe: Rasa may have it already (retry); if the
        # patient had a reply, Rasa's answer follows as a late reply threaded to the message.
        item.retry, item.answered = True, item.answered or taken.answered
        return True

    async def _park(self, bot: Bot, item: Inbound, why: str) -> None:
        await self.outbox.park(item.chat_id, item.sender, item.message_id, item.text, item.metadata, item.reply_to)
        log.warning("relay.parked chat=%s reason=%s", log_ref(item.sender), why)
        if not item.answered:
            await self._fail_safe(bot, item)

    async def _fail_safe(self, bot: Bot, item: Inbound) -> None:
        item.answered = True
        if self.claims is not None:
            self._spawn(self.claims.mark(item.message_id, "answered_at"))
        if item.fallback is not None:
            text = item.fallback
        elif self.is_emergency is not None and _safe_call(self.is_emergency, item.text):
            text = self.texts.failsafe_emergency
        else:
            text = self.texts.failsafe
        await self._send(bot, item.chat_id, text)

    async def _flush_chat(self, bot: Bot, chat_id: int) -> int:
        """Hand Rasa this chat's parked messages in order; returns how many are still parked.
        The caller holds the chat's lock."""
        if not self.outbox.has_pending(chat_id):
            return 0
        parked = await self.outbox.pending(chat_id)
        for index, entry in enumerate(parked):
            try:
                reply = await self.rasa.send(entry.sender, entry.text, entry.message_id, entry.metadata, retry=True)
            except RasaUnavailable:
                await self.outbox.failed_attempt(entry.id)
                return len(parked) - index
            await self._deliver(bot, chat_id, reply.messages, reply_to=entry.reply_to)
            await self.outbox.delivered(entry.id)
            log.info(
                "relay.unparked chat=%s parked_s=%.0f duplicate=%s", log_ref(entry.sender), time.time() - entry.created, reply.duplicate
            )
        return 0

    async def flush_all(self, bot: Bot) -> int:
        """Deliver every parked message whose chat is not busy; returns how many remain."""
        for chat_id in await self.outbox.chats():
            async with self._locks.hold(chat_id):
                await self._flush_chat(bot, chat_id)
        return await self.outbox.count()

    def start_retrying(self, bot: Bot) -> None:
        self._retry_task = asyncio.create_task(self.retry_forever(bot), name="relay-outbox-retry")
        if self.claims is not None:
            self._prune_task = asyncio.create_task(self.claims.prune_forever(), name="relay-dedup-prune")

    async def stop(self) -> None:
        """Stop retrying and let in-flight messages finish (they are parked if Rasa is gone)."""
        for task in (self._retry_task, self._prune_task):
            if task is not None:
                task.cancel()
        if self.checkins is not None:
            await self.checkins.stop()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.soft_timeout + 2)

    async def retry_forever(self, bot: Bot, interval: float = 3.0) -> None:
        """Background loop: once Rasa is back, parked messages go in without waiting for the patient."""
        while True:
            await asyncio.sleep(interval)
            try:
                if await self.outbox.count() and await self.rasa.is_up():
                    remaining = await self.flush_all(bot)
                    log.info("relay.outbox remaining=%d", remaining)
            except Exception as exc:  # the loop must survive anything
                log.error("relay.outbox.error type=%s", type(exc).__name__)

    async def _keep_typing(self, bot: Bot, chat_id: int) -> None:
        await asyncio.sleep(TYPING_DELAY)
        with contextlib.suppress(TelegramError):
            while True:
                await bot.send_chat_action(chat_id, ChatAction.TYPING)
                await asyncio.sleep(TYPING_REFRESH)

    def _keyboard(self, buttons: list[dict[str, Any]]) -> InlineKeyboardMarkup | None:
        row = []
        for button in buttons:
            title, payload = str(button.get("title") or ""), str(button.get("payload") or "")
            if not title or not payload:
                continue
            if len(payload.encode()) > CALLBACK_DATA_LIMIT:
                key = "p:" + hashlib.sha256(payload.encode()).hexdigest()[:40]
                self._long_payloads[key] = payload
                payload = key
            row.append(InlineKeyboardButton(title, callback_data=payload))
        return InlineKeyboardMarkup([row]) if row else None

    async def _deliver(
        self, bot: Bot, chat_id: int, messages: list[dict[str, Any]], reply_to: int | None, item: Inbound | None = None
    ) -> None:
        """Send Rasa's replies of one turn as one Telegram message (split only past 4,096 characters).

        Rasa answers a turn with several messages (the advice, then a question with buttons);
        Telegram allows a bot ~30 messages/s in all, so at its ceiling of incoming messages only
        one reply per message fits. The keyboard of the turn's last question goes on it. The
        patient counts as answered once it is sent."""
        texts: list[str] = []
        buttons: list[dict[str, Any]] = []
        for message in messages:
            text = message.get("text") or ""
            if message.get("image"):
                text = f"{text}\n{message['image']}".strip()
            if text:
                texts.append(text)
            buttons = message.get("buttons") or buttons
        if texts:
            await self._send(bot, chat_id, "\n\n".join(texts), self._keyboard(buttons), reply_to)
            if item is not None:
                item.answered = True

    async def _send(
        self, bot: Bot, chat_id: int, text: str, keyboard: InlineKeyboardMarkup | None = None, reply_to: int | None = None
    ) -> None:
        parts = split_message(text)
        for index, part in enumerate(parts):
            last = index == len(parts) - 1
            await bot.send_message(
                chat_id,
                part,
                reply_markup=keyboard if last else None,
                reply_parameters=ReplyParameters(reply_to, allow_sending_without_reply=True) if reply_to and index == 0 else None,
            )


def _safe_call(check: Callable[[str], bool], text: str) -> bool:
    try:
        return bool(check(text))
    except Exception:  # a broken detector must not stop the fail-safe reply
        log.exception("relay.emergency_check.failed")
        return True  # when unsure whether it is an emergency, escalate

"""The relay's handlers: Telegram updates in, Rasa replies out, never silent, nothing lost.

For each patient message the relay
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

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, ReplyParameters, Update
from telegram.constants import ChatAction
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

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


FORGET_YES, FORGET_NO = "relay:forget:yes", "relay:forget:no"
NEURO_START = "neuro:start"  # bot.checkins.neuro.START (the relay does not import the check-ins)
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


class Relay:
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

    # ------------------------------------------------------------------ handlers
    async def on_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        chat = update.effective_chat
        if message is None or chat is None:
            return
        text = message.text or message.caption or ""
        edited = update.edited_message is not None
        suffix = f":e{int(message.edit_date.timestamp())}" if edited and message.edit_date else ""
        item = self._inbound(
            chat.id,
            text,
            f"{message.message_id}{suffix}",
            {"edited": edited, "update_id": update.update_id},
            reply_to=message.message_id,
        )
        self._answers_checkins(item)  # any message answers an open check-in; a bare "yes" then means an emergency sign
        await self.handle(context.bot, item)

    async def on_button(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        query = update.callback_query
        chat = update.effective_chat
        if query is None or chat is None:
            return
        data = query.data or ""
        if data.startswith(("checkin:", "neuro:")) and self.checkins is not None:
            with contextlib.suppress(TelegramError):
                await query.answer()
            if query.message is not None and data != NEURO_START:  # the check-in keeps its yes/no after "Neuro check"
                with contextlib.suppress(BadRequest):
                    await query.edit_message_reply_markup(reply_markup=None)
            if data.startswith("neuro:"):
                await self.checkins.neuro.button(
                    chat.id, self._sender(chat.id), data, lambda found: self._neuro_report(context.bot, chat.id, found)
                )
            else:
                title = _button_title(query.message, data) if query.message else None
                await self.checkins.button(
                    chat.id, data, lambda text, question: self._checkin_answer(context.bot, chat.id, query.id, text, question, title)
                )
            return
        if data in (FORGET_YES, FORGET_NO):
            work = self._spawn(self._forget(context.bot, chat.id, confirmed=data == FORGET_YES))
        else:
            payload = self._long_payloads.get(data, data)
            title = _button_title(query.message, data) if query.message else None
            item = self._inbound(chat.id, payload, f"cb:{query.id}", {"button": title, "update_id": update.update_id}, None)
            self._answers_checkins(item)  # "/affirm" from a button answers an open check-in's question too
            work = self._spawn(self._process(context.bot, item))  # takes its place in line before any await
        with contextlib.suppress(TelegramError):
            await query.answer()
        if query.message is not None:
            with contextlib.suppress(BadRequest):  # already cleared (double tap) is fine
                await query.edit_message_reply_markup(reply_markup=None)
        if data in (FORGET_YES, FORGET_NO):
            await work
        else:
            await self._answer_in_time(context.bot, item, work)

    async def on_start(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat, message = update.effective_chat, update.effective_message
        if chat is None or message is None:
            return
        code = context.args[0][:64] if context.args else None
        metadata: dict[str, Any] = {"update_id": update.update_id, "command": "start"}
        if code:
            metadata["enrolment_code"] = code
        item = self._inbound(chat.id, "/greet", f"{message.message_id}", metadata, message.message_id, fallback=self.texts.greet)
        await self.handle(context.bot, item)
        await self._send(context.bot, chat.id, self.texts["start_commands"])
        if code and self.checkins is not None:  # this chat answers the enrolment's check-ins from now on
            await self.checkins.linked(code, chat.id, self._sender(chat.id))

    async def on_checkins(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/checkins off|on`: the patient stops or restarts the scheduled check-ins."""
        if update.effective_chat is None or self.checkins is None:
            return
        argument = (context.args[0].lower() if context.args else "")[:8]
        await self._send(context.bot, update.effective_chat.id, await self.checkins.command(update.effective_chat.id, argument))

    async def on_neurocheck(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """`/neurocheck`: the caregiver neuro check (bot/checkins/neuro.py), enrolled or not."""
        if update.effective_chat is None:
            return
        if self.checkins is None:
            await self._send(context.bot, update.effective_chat.id, self.texts["unknown_command"])
            return
        await self.checkins.neuro.start(update.effective_chat.id, self._sender(update.effective_chat.id))

    async def _neuro_report(self, bot: Bot, chat_id: int, found: dict[str, Any]) -> None:
        """An escalated neuro check goes to Rasa like a message (intent fixed, the findings in its
        metadata), so the triage decides and replies: 911 advice, and the clinic's emergency."""
        item = self._inbound(
            chat_id, "/report_symptoms", f"neuro:{found['check']}", {"neuro_check": found}, None, fallback=self.texts.failsafe_emergency
        )
        await self.handle(bot, item)

    async def _checkin_answer(self, bot: Bot, chat_id: int, query_id: str, text: str, question: dict[str, Any], title: str | None) -> None:
        """A check-in button's yes or no goes to Rasa like a message, answering the check-in's question."""
        fallback = self.texts.failsafe_emergency if text == "/affirm" else None  # Rasa away: a yes still says 911
        item = self._inbound(chat_id, text, f"cb:{query_id}", {"checkin": question, "button": title}, None, fallback=fallback)
        await self.handle(bot, item)

    async def on_help(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat:
            await self._send(context.bot, update.effective_chat.id, self.texts["help"])

    async def on_emergency(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat:
            await self._send(context.bot, update.effective_chat.id, self.texts.emergency_signs)

    async def on_restart(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        chat, message = update.effective_chat, update.effective_message
        if chat is None or message is None:
            return
        item = self._inbound(
            chat.id,
            "/restart",
            f"{message.message_id}",
            {"update_id": update.update_id, "command": "restart"},
            message.message_id,
            fallback=self.texts["restarted"],
        )
        await self.handle(context.bot, item)

    async def on_forget(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat is None:
            return
        keyboard = InlineKeyboardMarkup(
            [
                [
                    InlineKeyboardButton(self.texts["forget_yes"], callback_data=FORGET_YES),
                    InlineKeyboardButton(self.texts["forget_no"], callback_data=FORGET_NO),
                ]
            ]
        )
        await self._send(context.bot, update.effective_chat.id, self.texts["forget_confirm"], keyboard)

    async def on_unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat:
            await self._send(context.bot, update.effective_chat.id, self.texts["unknown_command"])

    async def on_non_text(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if update.effective_chat:
            log.info("relay.non_text chat=%s", log_ref(self._sender(update.effective_chat.id)))
            await self._send(context.bot, update.effective_chat.id, self.texts["non_text"])

    async def on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Last line: log without content; if a chat is known, still give it the fail-safe."""
        error = context.error
        log.error("relay.error type=%s", type(error).__name__, exc_info=(type(error), error, error.__traceback__) if error else None)
        if isinstance(update, Update) and update.effective_chat and update.effective_message:
            with contextlib.suppress(TelegramError):
                await self._send(context.bot, update.effective_chat.id, self.texts.failsafe)

    # ------------------------------------------------------------------ core
    def _sender(self, chat_id: int) -> str:
        return sender_id(chat_id, self._sender_key)

    def _inbound(
        self, chat_id: int, text: str, message_id: str, metadata: dict[str, Any], reply_to: int | None, fallback: str | None = None
    ) -> Inbound:
        """`message_id` is unique within the chat; Rasa stores it prefixed with the pseudonym."""
        sender = self._sender(chat_id)
        return Inbound(chat_id, sender, text, f"{sender}:{message_id}", {"telegram": metadata}, reply_to, fallback)

    def _answers_checkins(self, item: Inbound) -> None:
        """Before Rasa gets it, the message answers the chat's open check-ins and learns which question it may answer."""
        if self.checkins is not None:
            checkins, chat_id = self.checkins, item.chat_id
            item.probe = lambda: checkins.answered(chat_id)

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

    async def _forget(self, bot: Bot, chat_id: int, confirmed: bool) -> None:
        if not confirmed:
            await self._send(bot, chat_id, self.texts["forget_kept"])
            return
        async with self._locks.hold(chat_id):
            parked = await self.outbox.forget(chat_id)
            try:
                deleted = await self.rasa.forget(self._sender(chat_id))
            except RasaUnavailable:
                log.warning("relay.forget.failed chat=%s", log_ref(self._sender(chat_id)))
                await self._send(bot, chat_id, self.texts["forget_failed"])
                return
        log.info("relay.forgotten chat=%s events=%d parked=%d", log_ref(self._sender(chat_id)), deleted, parked)
        await self._send(bot, chat_id, self.texts["forgotten"])

    # ------------------------------------------------------------------ output
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


def _button_title(message: Any, data: str) -> str | None:
    markup = getattr(message, "reply_markup", None)
    for row in getattr(markup, "inline_keyboard", ()) or ():
        for button in row:
            if button.callback_data == data:
                return str(button.text)
    return None


def _safe_call(check: Callable[[str], bool], text: str) -> bool:
    try:
        return bool(check(text))
    except Exception:  # a broken detector must not stop the fail-safe reply
        log.exception("relay.emergency_check.failed")
        return True  # when unsure whether it is an emergency, escalate

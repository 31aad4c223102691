"""The relay's Telegram handlers: each kind of update (a message, a button, a command, a photo or
voice note, an error) becomes an `Inbound` for delivery.py, or a direct answer (/help, /forget,
/checkins, /neurocheck). Never silent: every handler answers something.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.error import BadRequest, TelegramError
from telegram.ext import ContextTypes

from bot.telegram.delivery import Delivery, Inbound, log_ref
from bot.telegram.rasa_client import RasaUnavailable

log = logging.getLogger("bot.telegram")
FORGET_YES, FORGET_NO = "relay:forget:yes", "relay:forget:no"
NEURO_START = "neuro:start"  # bot.checkins.neuro.START (the relay does not import the check-ins)


class Relay(Delivery):
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


def _button_title(message: Any, data: str) -> str | None:
    markup = getattr(message, "reply_markup", None)
    for row in getattr(markup, "inline_keyboard", ()) or ():
        for button in row:
            if button.callback_data == data:
                return str(button.text)
    return None

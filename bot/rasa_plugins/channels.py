"""`relay`: the Rasa input channel the Telegram relay talks to (`/webhooks/relay/...`).

Rasa's REST channel is fine for `make eval`, but a relay that must never lose a message needs
three things it lacks: it answers HTTP 200 with an empty list when processing fails (the relay
could not tell "no reply" from "not processed"), it drops `metadata` and `message_id`, and it
takes no credentials. This channel:

* requires the Rasa API token as a bearer token (the relay has it; nothing else on the host
  should post patient messages);
* passes `metadata` (e.g. the Telegram deep-link code) and `message_id` to Rasa;
* answers 500 when Rasa failed, so the relay gives the fail-safe reply and retries later;
* on a retry (`"retry": true`) first checks whether that `message_id` was already stored, so a
  message whose first attempt timed out on the relay's side is never processed twice; it then
  answers with the replies stored for it (a relay killed before sending them can still send);
* keeps each bot message whole (no split at blank lines);
* deletes a conversation on `/forget` under the conversation lock.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.core.channels.rest import RestInput
from rasa.shared.core.events import BotUttered, UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.settings import load_settings

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 20_000
TRAFFIC_KEY = "traffic"  # the clinic's bot.clinic.labels.TRAFFIC_KEY (not imported: Rasa loads this module)


class WholeMessages(CollectingOutputChannel):
    """Collects each bot message whole: the stock collector cuts texts at blank lines into
    separate messages, which on Telegram means more messages and more rate-limit waits."""

    @classmethod
    def name(cls) -> str:
        return "relay"

    async def send_text_message(self, recipient_id: str, text: str, **kwargs: Any) -> None:
        await self._persist_message(self._message(recipient_id, text=text.strip()))


class RelayInput(InputChannel):
    """Authenticated, lossless JSON channel for our own front ends (the Telegram relay)."""

    @classmethod
    def name(cls) -> str:
        return "relay"

    @classmethod
    def from_credentials(cls, credentials: dict[str, Any] | None) -> RelayInput:
        return cls()

    def __init__(self, token: str | None = None) -> None:
        self._token = token or str(load_settings().rasa_api_token)

    def _authorised(self, request: Request) -> bool:
        supplied = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        return bool(supplied) and hmac.compare_digest(supplied.encode(), self._token.encode())

    @staticmethod
    def _body(request: Request) -> dict[str, Any] | None:
        try:
            body = request.json
        except Exception:  # sanic raises on malformed JSON
            return None
        return body if isinstance(body, dict) else None

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        relay = Blueprint("relay_webhook", __name__)

        relay.add_route(_health, "/", methods=["GET"])

        @relay.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            if not self._authorised(request):
                return response.json({"error": "unauthorised"}, status=401)
            body = _message_body(request)
            if body is None:
                return _malformed()
            sender, message_id = body["sender"], body.get("message_id")
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            if body.get("retry") and message_id:
                # Under the conversation's lock: a first attempt still being processed finishes first.
                async with request.app.ctx.agent.lock_store.lock(sender):
                    stored = await _stored_replies(request, sender, str(message_id))
                if stored is not None:
                    return response.json({"messages": stored, "duplicate": True})
            collector = WholeMessages()
            try:
                await on_new_message(
                    UserMessage(
                        body["message"][:MAX_TEXT_CHARS],
                        collector,
                        sender,
                        input_channel=self.name(),
                        message_id=str(message_id) if message_id else None,
                        metadata=metadata,
                    )
                )
            except Exception as exc:  # reported to the relay, which replies safely and retries
                log.exception("relay message could not be processed (%s)", type(exc).__name__)
                return response.json({"error": type(exc).__name__, "messages": collector.messages}, status=500)
            return response.json({"messages": collector.messages, "duplicate": False})

        @relay.route("/forget", methods=["POST"])
        async def forget(request: Request) -> HTTPResponse:
            if not self._authorised(request):
                return response.json({"error": "unauthorised"}, status=401)
            body = self._body(request)
            if body is None or not isinstance(body.get("sender"), str):
                return response.json({"error": "expected a JSON object with a string 'sender'"}, status=400)
            agent = request.app.ctx.agent
            async with agent.lock_store.lock(body["sender"]):
                deleted = await _delete_conversation(agent.tracker_store, body["sender"])
            log.info("conversation forgotten: %d events deleted", deleted)
            return response.json({"deleted": deleted})

        return relay


REPLY_KEYS = ("buttons", "image", "custom", "attachment", "elements", "quick_replies")


def _malformed() -> HTTPResponse:
    return response.json({"error": "expected a JSON object with string 'sender' and 'message'"}, status=400)


async def _health(_: Request) -> HTTPResponse:
    return response.json({"status": "ok"})


def _message_body(request: Request) -> dict[str, Any] | None:
    """The JSON body of a message post, or None when it lacks a string sender and message."""
    body = RelayInput._body(request)
    if body is None or not isinstance(body.get("sender"), str) or not isinstance(body.get("message"), str):
        return None
    return body


class RestChannel(RestInput):
    """Rasa's REST channel (`/webhooks/rest/webhook`, the documented way to try the bot and what
    `make eval` uses), except that a failure is not an empty 200 that reads as "no reply":
    a malformed body answers 400 and an internal error 500, both with a JSON error.

    `metadata.traffic = "test"` marks evaluation and benchmark traffic, which the clinic hides
    and never alerts on. Only a caller holding the Rasa API token (`?token=` or a bearer token)
    may send it; anyone else gets 403 and nothing is stored, so nobody can hide a real patient's
    conversation from the clinic, and a test run with a wrong token pages nobody."""

    def __init__(self, token: str | None = None) -> None:
        super().__init__()
        self._token = token or str(load_settings().rasa_api_token)

    def _may_tag(self, request: Request) -> bool:
        supplied = request.args.get("token") or (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        return bool(supplied) and hmac.compare_digest(str(supplied).encode(), self._token.encode())

    @classmethod
    def name(cls) -> str:
        return "rest"

    def blueprint(self, on_new_message: Callable[[UserMessage], Awaitable[Any]]) -> Blueprint:
        rest = Blueprint("rest_webhook", __name__)

        rest.add_route(_health, "/", methods=["GET"])

        @rest.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            body = _message_body(request)
            if body is None:
                return _malformed()
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else None
            if metadata and TRAFFIC_KEY in metadata and not self._may_tag(request):
                # refused, not stored untagged: an evaluation pointed at a server with the wrong
                # token would otherwise be filed as real patients and page the care team
                return response.json({"error": "metadata.traffic needs the Rasa API token (Authorization: Bearer …)"}, status=403)
            collector = CollectingOutputChannel()
            try:
                await on_new_message(
                    UserMessage(body["message"][:MAX_TEXT_CHARS], collector, body["sender"], input_channel=self.name(), metadata=metadata)
                )
            except Exception as exc:  # the caller must be able to tell "no reply" from "not processed"
                log.exception("rest message could not be processed (%s)", type(exc).__name__)
                return response.json({"error": type(exc).__name__, "messages": collector.messages}, status=500)
            return response.json(collector.messages)

        return rest


async def _stored_replies(request: Request, sender: str, message_id: str) -> list[dict[str, Any]] | None:
    """The bot's replies stored after the user message `message_id`, or None if it is not stored."""
    tracker = await request.app.ctx.agent.tracker_store.retrieve_full_tracker(sender)
    if tracker is None:
        return None
    replies: list[dict[str, Any]] | None = None
    for event in tracker.events:
        if isinstance(event, UserUttered):
            if replies is not None:
                break  # the next user message: its replies are not ours
            if event.message_id == message_id:
                replies = []
        elif replies is not None and isinstance(event, BotUttered):
            data = event.data or {}
            replies.append({"recipient_id": sender, "text": event.text, **{k: data[k] for k in REPLY_KEYS if data.get(k)}})
    return replies


async def _delete_conversation(store: Any, sender: str) -> int:
    """Delete through the wrapped store (Rasa wraps ours in a FailSafeTrackerStore)."""
    inner = getattr(store, "_tracker_store", store)
    delete = getattr(inner, "delete", None)
    if delete is None:
        raise RuntimeError(f"tracker store {type(inner).__name__} cannot delete conversations")
    return int(await delete(sender))

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
  message whose first attempt timed out on the relay's side is never processed twice;
* keeps each bot message whole (no split at blank lines);
* deletes a conversation on `/forget` under the conversation lock.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rasa.core.channels.channel import CollectingOutputChannel, InputChannel, UserMessage
from rasa.shared.core.events import UserUttered
from sanic import Blueprint, response
from sanic.request import Request
from sanic.response import HTTPResponse

from bot.settings import load_settings

log = logging.getLogger(__name__)
MAX_TEXT_CHARS = 20_000


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

        @relay.route("/", methods=["GET"])
        async def health(_: Request) -> HTTPResponse:
            return response.json({"status": "ok"})

        @relay.route("/webhook", methods=["POST"])
        async def receive(request: Request) -> HTTPResponse:
            if not self._authorised(request):
                return response.json({"error": "unauthorised"}, status=401)
            body = self._body(request)
            if body is None or not isinstance(body.get("sender"), str) or not isinstance(body.get("message"), str):
                return response.json({"error": "expected a JSON object with string 'sender' and 'message'"}, status=400)
            sender, message_id = body["sender"], body.get("message_id")
            metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
            if body.get("retry") and message_id and await _already_stored(request, sender, str(message_id)):
                return response.json({"messages": [], "duplicate": True})
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


async def _already_stored(request: Request, sender: str, message_id: str) -> bool:
    tracker = await request.app.ctx.agent.tracker_store.retrieve_full_tracker(sender)
    return tracker is not None and any(isinstance(event, UserUttered) and event.message_id == message_id for event in tracker.events)


async def _delete_conversation(store: Any, sender: str) -> int:
    """Delete through the wrapped store (Rasa wraps ours in a FailSafeTrackerStore)."""
    inner = getattr(store, "_tracker_store", store)
    delete = getattr(inner, "delete", None)
    if delete is None:
        raise RuntimeError(f"tracker store {type(inner).__name__} cannot delete conversations")
    return int(await delete(sender))

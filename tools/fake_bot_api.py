"""A fake Telegram Bot API server on loopback, for tests, the relay benchmark and soak runs.

Telegram's servers are the one part we cannot run here, so this stands in for them: the real
python-telegram-bot in the relay talks HTTP to it through `TELEGRAM_API_BASE_URL`. It speaks
the subset the relay uses (getMe, getUpdates with long polling, setWebhook/deleteWebhook and
pushing updates to the webhook with the secret header, sendMessage, sendChatAction,
editMessageReplyMarkup, answerCallbackQuery), records every call, and can inject failures
(HTTP 429 with `retry_after`, 5xx) to exercise the relay's retries.

It runs its own event loop in a background thread so synchronous tests and benchmark scripts
can drive it: `push_text`, `push_callback`, ... create updates; `wait_sent` waits for replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

BOT_USER = {"id": 7000001, "is_bot": True, "first_name": "CRS checker", "username": "crs_checker_test_bot"}
JSON_FIELDS = {
    "chat_id", "message_id", "offset", "limit", "timeout", "reply_markup", "reply_parameters",
    "allowed_updates", "max_connections", "drop_pending_updates", "show_alert", "cache_time", "commands",
}  # fmt: skip


@dataclass
class Sent:
    method: str
    params: dict[str, Any]
    at: float  # time.monotonic() when the fake received it
    message_id: int | None = None


@dataclass
class _Fault:
    method: str
    status: int
    retry_after: int | None
    remaining: int


@dataclass
class FakeTelegram:
    token: str
    host: str = "127.0.0.1"
    port: int = 0
    calls: list[Sent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._updates: list[dict[str, Any]] = []
        self._confirmed = 0
        # Distinct across fake servers by default; `restart_update_ids` starts them again, as
        # Telegram does after a week without updates.
        self._update_ids = itertools.count(int(time.time() * 1000))
        self._delivered: set[int] = set()  # id() of updates returned by getUpdates, not yet confirmed
        self._pushed: dict[int, dict[str, Any]] = {}
        self._message_ids = itertools.count(100_000)
        self._new_update: asyncio.Condition | None = None
        self._sent_cond = threading.Condition()
        self._webhook: dict[str, Any] | None = None
        self._faults: list[_Fault] = []
        self._delays: list[list[Any]] = []  # [method, seconds, remaining]
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-telegram", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> FakeTelegram:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._new_update = asyncio.Condition()
        app = web.Application(client_max_size=2**20)
        app.router.add_route("POST", "/bot{token}/{method}", self._handle)
        app.router.add_route("GET", "/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()

    def stop(self) -> None:
        async def _stop() -> None:
            if self._new_update is not None:
                async with self._new_update:  # release long polls
                    self._new_update.notify_all()
            await self._session.close()
            if self._runner:
                await self._runner.shutdown()
                await self._runner.cleanup()
            current = asyncio.current_task()
            for task in asyncio.all_tasks():
                if task is not current:
                    task.cancel()

        asyncio.run_coroutine_threadsafe(_stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(30)

    # ------------------------------------------------------------------ updates in
    def _user(self, chat_id: int) -> dict[str, Any]:
        return {"id": chat_id, "is_bot": False, "first_name": f"Patient {chat_id}", "language_code": "en"}

    def _message(self, chat_id: int, **content: Any) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": f"Patient {chat_id}"},
            "from": self._user(chat_id),
            **content,
        }

    @staticmethod
    def _text_content(text: str) -> dict[str, Any]:
        content: dict[str, Any] = {"text": text}
        if text.startswith("/"):
            command = text.split()[0]
            content["entities"] = [{"type": "bot_command", "offset": 0, "length": len(command)}]
        return content

    def push(self, payload: dict[str, Any]) -> int:
        """Queue one update (the `update_id` is added); returns the update id."""
        return int(self._call(self._push(payload)))

    def restart_update_ids(self, start: int = 1) -> None:
        """Number the next updates from `start` again (Telegram picks a new start at random after
        a week without updates; message ids in a chat keep counting)."""
        self._update_ids = itertools.count(start)

    def unconfirmed(self) -> int:
        """Updates queued for polling and not yet confirmed by the relay's next offset."""
        return len(self._updates)

    def redeliver(self, update_id: int) -> None:
        """Send an update again with its id, as Telegram does after a failed webhook call."""
        self._call(self._push({**self._pushed[update_id], "update_id": update_id}))

    async def _push(self, payload: dict[str, Any]) -> int:
        update = {"update_id": next(self._update_ids), **payload}
        self._pushed[int(update["update_id"])] = payload
        if self._webhook:
            await self._deliver_webhook(update)
        else:
            assert self._new_update is not None
            async with self._new_update:
                self._updates.append(update)
                self._new_update.notify_all()
        return int(update["update_id"])

    def push_text_nowait(self, chat_id: int, text: str) -> None:
        """Queue a text message without waiting (for open-loop load: arrivals do not wait for us)."""
        payload = {"message": self._message(chat_id, **self._text_content(text))}
        asyncio.run_coroutine_threadsafe(self._push(payload), self._loop)

    def push_text(self, chat_id: int, text: str) -> int:
        return self.push({"message": self._message(chat_id, **self._text_content(text))})

    def push_edited(self, chat_id: int, message_id: int, text: str) -> int:
        message = self._message(chat_id, **self._text_content(text))
        message.update(message_id=message_id, edit_date=int(time.time()) + 1)
        return self.push({"edited_message": message})

    def push_media(self, chat_id: int, kind: str) -> int:
        media = {
            "photo": {"photo": [{"file_id": "p1", "file_unique_id": "up1", "width": 90, "height": 90}]},
            "voice": {"voice": {"file_id": "v1", "file_unique_id": "uv1", "duration": 3}},
            "sticker": {
                "sticker": {
                    "file_id": "s1", "file_unique_id": "us1", "type": "regular", "width": 512, "height": 512,
                    "is_animated": False, "is_video": False,
                }
            },
            "location": {"location": {"latitude": 40.7, "longitude": -74.0}},
            "document": {"document": {"file_id": "d1", "file_unique_id": "ud1", "file_name": "labs.pdf"}},
        }[kind]  # fmt: skip
        return self.push({"message": self._message(chat_id, **media)})

    def push_callback(self, chat_id: int, sent: Sent, data: str) -> str:
        """A tap on an inline button of a message the bot sent; returns the callback query id."""
        message = {
            "message_id": sent.message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": f"Patient {chat_id}"},
            "from": BOT_USER,
            "text": sent.params.get("text", ""),
            "reply_markup": sent.params.get("reply_markup"),
        }
        query = {"id": f"cb{next(self._update_ids)}", "from": self._user(chat_id), "message": message, "chat_instance": "ci", "data": data}
        self.push({"callback_query": query})
        return str(query["id"])

    async def _deliver_webhook(self, update: dict[str, Any]) -> None:
        assert self._webhook is not None
        headers = {"X-Telegram-Bot-Api-Secret-Token": self._webhook["secret_token"]} if self._webhook.get("secret_token") else {}
        for _attempt in range(50):  # Telegram retries a failing webhook; so do we
            try:
                async with self._session.post(self._webhook["url"], json=update, headers=headers) as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError("webhook never accepted the update")

    # ------------------------------------------------------------------ recorded output
    def sent(self, chat_id: int | None = None, method: str = "sendMessage") -> list[Sent]:
        with self._sent_cond:
            return [c for c in self.calls if c.method == method and (chat_id is None or c.params.get("chat_id") == chat_id)]

    def wait_sent(self, chat_id: int, count: int, timeout: float = 30, method: str = "sendMessage") -> list[Sent]:
        """Block until `count` calls of `method` to `chat_id` were received (AssertionError if not)."""
        deadline = time.monotonic() + timeout
        with self._sent_cond:
            while len(found := self.sent(chat_id, method)) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"chat {chat_id}: {len(found)} of {count} {method} after {timeout:.0f} s: {found}")
                self._sent_cond.wait(left)
            return found

    def wait_for(self, chat_id: int, predicate: Any, timeout: float = 30, method: str = "sendMessage", after: int = 0) -> Sent:
        """Block until a call of `method` to `chat_id` (from the `after`-th on) satisfies `predicate`."""
        deadline = time.monotonic() + timeout
        with self._sent_cond:
            while True:
                for call in self.sent(chat_id, method)[after:]:
                    if predicate(call):
                        return call
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"chat {chat_id}: no matching {method} after {timeout:.0f} s: {self.sent(chat_id, method)}")
                self._sent_cond.wait(left)

    def fail_next(self, method: str, status: int = 502, retry_after: int | None = None, times: int = 1) -> None:
        """Answer the next `times` calls of `method` with an error."""
        self._faults.append(_Fault(method, status, retry_after, times))

    def slow_next(self, method: str, seconds: float, times: int = 1) -> None:
        """Answer the next `times` calls of `method` only after `seconds` (a congested Bot API)."""
        self._delays.append([method, seconds, times])

    # ------------------------------------------------------------------ the Bot API
    @staticmethod
    def _ok(result: Any) -> web.Response:
        return web.json_response({"ok": True, "result": result})

    async def _params(self, request: web.Request) -> dict[str, Any]:
        if request.content_type == "application/json":
            params = dict(await request.json())
            with contextlib.suppress(KeyError, TypeError, ValueError):  # Telegram takes "-100…" and -100… alike
                params["chat_id"] = int(params["chat_id"])
            return params
        raw = dict(await request.post()) if request.can_read_body else {}
        raw.update(request.query)
        params: dict[str, Any] = {}
        for key, value in raw.items():
            value = str(value)
            if key in JSON_FIELDS:
                try:
                    params[key] = json.loads(value)
                    continue
                except ValueError:
                    pass
            params[key] = value
        return params

    async def _handle(self, request: web.Request) -> web.Response:
        if request.match_info["token"] != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        method = request.match_info["method"]
        try:
            params = await self._params(request)
        except (ValueError, ConnectionError):  # bad body, or the client hung up (e.g. a stopping relay)
            return web.json_response({"ok": False, "error_code": 400, "description": "Bad Request: bad body"}, status=400)
        for fault in self._faults:
            if fault.method == method and fault.remaining > 0:
                fault.remaining -= 1
                body: dict[str, Any] = {"ok": False, "error_code": fault.status, "description": "injected"}
                if fault.retry_after is not None:
                    body["parameters"] = {"retry_after": fault.retry_after}
                return web.json_response(body, status=fault.status)
        for delay in self._delays:
            if delay[0] == method and delay[2] > 0:
                delay[2] -= 1
                await asyncio.sleep(delay[1])
                break
        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            return web.json_response({"ok": False, "error_code": 404, "description": f"Not Found: {method}"}, status=404)
        return await handler(params)

    def _record(self, method: str, params: dict[str, Any], message_id: int | None = None) -> None:
        with self._sent_cond:
            self.calls.append(Sent(method, params, time.monotonic(), message_id))
            self._sent_cond.notify_all()

    async def _api_getMe(self, params: dict[str, Any]) -> web.Response:  # noqa: N802 - Bot API method names
        return self._ok(BOT_USER)

    async def _api_deleteWebhook(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        self._webhook = None
        return self._ok(True)

    async def _api_setWebhook(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        self._webhook = {"url": params["url"], "secret_token": params.get("secret_token")}
        self._record("setWebhook", {k: v for k, v in params.items() if k != "secret_token"})
        return self._ok(True)

    async def _api_setMyCommands(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        self._record("setMyCommands", params)
        return self._ok(True)

    async def _api_getWebhookInfo(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        return self._ok({"url": (self._webhook or {}).get("url", ""), "has_custom_certificate": False, "pending_update_count": 0})

    async def _api_getUpdates(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        offset = int(params.get("offset") or 0)
        timeout = min(float(params.get("timeout") or 0), 10.0)
        limit = int(params.get("limit") or 100)
        assert self._new_update is not None
        async with self._new_update:
            if offset:  # confirms what an earlier call returned below the offset; new updates stay
                self._updates = [u for u in self._updates if not (id(u) in self._delivered and u["update_id"] < offset)]
                self._delivered &= {id(u) for u in self._updates}
            if not self._updates and timeout:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_update.wait(), timeout)
            batch = self._updates[:limit]
            self._delivered.update(id(u) for u in batch)
            return self._ok(batch)

    async def _api_sendMessage(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        message_id = next(self._message_ids)
        self._record("sendMessage", params, message_id)
        chat_id = int(params["chat_id"])
        result = {
            "message_id": message_id,
            "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private", "first_name": f"Patient {chat_id}"},
            "from": BOT_USER,
            "text": params.get("text", ""),
        }
        if params.get("reply_markup"):
            result["reply_markup"] = params["reply_markup"]
        return self._ok(result)

    async def _api_sendChatAction(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        self._record("sendChatAction", params)
        return self._ok(True)

    async def _api_editMessageReplyMarkup(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        self._record("editMessageReplyMarkup", params)
        return self._ok(True)

    async def _api_answerCallbackQuery(self, params: dict[str, Any]) -> web.Response:  # noqa: N802
        self._record("answerCallbackQuery", params)
        return self._ok(True)

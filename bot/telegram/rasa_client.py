"""Async client for the Rasa server's `relay` channel (bot/rasa_plugins/channels.py).

aiohttp, like the relay's Bot API calls (see aiohttp_request.py for the measured reason); one
pooled session serves every chat. It is created on first use, inside the running event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp


class RasaUnavailable(Exception):
    """Rasa did not process the message (down, error, or no answer in time)."""


@dataclass(frozen=True)
class RasaReply:
    messages: list[dict[str, Any]]
    duplicate: bool


class RasaClient:
    def __init__(self, base_url: str, token: str, timeout: float = 120.0) -> None:
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=3.0)
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout, connector=aiohttp.TCPConnector(limit=64))
        return self._session

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            async with self._http().post(f"{self._base}{path}", json=body) as response:
                if response.status != 200:
                    raise RasaUnavailable(f"HTTP {response.status}")
                data = await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise RasaUnavailable(type(exc).__name__) from None
        if not isinstance(data, dict):
            raise RasaUnavailable("malformed answer")
        return data

    async def send(self, sender: str, text: str, message_id: str, metadata: dict[str, Any] | None = None, retry: bool = False) -> RasaReply:
        body = {"sender": sender, "message": text, "message_id": message_id, "metadata": metadata or {}, "retry": retry}
        data = await self._post("/webhooks/relay/webhook", body)
        try:
            return RasaReply(list(data["messages"]), bool(data.get("duplicate")))
        except (KeyError, TypeError):
            raise RasaUnavailable("malformed answer") from None

    async def forget(self, sender: str) -> int:
        data = await self._post("/webhooks/relay/forget", {"sender": sender})
        try:
            return int(data["deleted"])
        except (KeyError, TypeError, ValueError):
            raise RasaUnavailable("malformed answer") from None

    async def is_up(self) -> bool:
        try:
            async with self._http().get(f"{self._base}/webhooks/relay/", timeout=aiohttp.ClientTimeout(total=2.0)) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()

"""Async client for the Rasa server's `relay` channel (bot/channels.py).

httpx because python-telegram-bot already ships it and its `AsyncClient` pools connections;
one client serves every chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


class RasaUnavailable(Exception):
    """Rasa did not process the message (down, error, or no answer in time)."""


@dataclass(frozen=True)
class RasaReply:
    messages: list[dict[str, Any]]
    duplicate: bool


class RasaClient:
    def __init__(self, base_url: str, token: str, timeout: float = 120.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(timeout, connect=3.0),
            limits=httpx.Limits(max_connections=64, max_keepalive_connections=32),
        )

    async def send(self, sender: str, text: str, message_id: str, metadata: dict[str, Any] | None = None, retry: bool = False) -> RasaReply:
        body = {"sender": sender, "message": text, "message_id": message_id, "metadata": metadata or {}, "retry": retry}
        try:
            response = await self._http.post("/webhooks/relay/webhook", json=body)
        except httpx.HTTPError as exc:
            raise RasaUnavailable(type(exc).__name__) from None
        if response.status_code != 200:
            raise RasaUnavailable(f"HTTP {response.status_code}")
        try:
            data = response.json()
            return RasaReply(list(data["messages"]), bool(data.get("duplicate")))
        except (ValueError, KeyError, TypeError):
            raise RasaUnavailable("malformed answer") from None

    async def forget(self, sender: str) -> int:
        try:
            response = await self._http.post("/webhooks/relay/forget", json={"sender": sender})
            response.raise_for_status()
            return int(response.json()["deleted"])
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            raise RasaUnavailable("forget failed") from None

    async def is_up(self) -> bool:
        try:
            return (await self._http.get("/webhooks/relay/", timeout=2.0)).status_code == 200
        except httpx.HTTPError:
            return False

    async def aclose(self) -> None:
        await self._http.aclose()

"""`EndpointConfig.session`: one keep-alive session per endpoint and event loop.

Replaces: `EndpointConfig.request` opened a new aiohttp session, so a new TCP connection to the
action server, for every action call. Each endpoint now keeps one session per event loop with
keep-alive connections, closed client-side (2 s) before the action server's Sanic drops them
(5 s), so a request never lands on a connection the server is closing. Bodies are serialised
with ujson (bot/fastjson.py).
"""

from __future__ import annotations

import asyncio

import aiohttp
from rasa.utils.endpoints import DEFAULT_REQUEST_TIMEOUT, EndpointConfig

from bot.fastjson import dumps

KEEPALIVE_SECONDS = 2.0


class _BorrowedSession:
    """`async with` over a long-lived session that must stay open after the block."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def __aenter__(self) -> aiohttp.ClientSession:
        return self._session

    async def __aexit__(self, *exc: object) -> None:
        return None


def _endpoint_session(self: EndpointConfig) -> _BorrowedSession:
    """`EndpointConfig.session` with one keep-alive session per endpoint and event loop."""
    loop = asyncio.get_running_loop()
    sessions: dict[int, aiohttp.ClientSession] = self.__dict__.setdefault("_crs_sessions", {})
    session = sessions.get(id(loop))
    if session is None or session.closed or session._loop is not loop:
        auth = aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"]) if self.basic_auth else None
        session = sessions[id(loop)] = aiohttp.ClientSession(
            headers=self.headers,
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
            connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS),
            json_serialize=dumps,
        )
    return _BorrowedSession(session)


def install() -> None:
    EndpointConfig.session = _endpoint_session

"""The clinic app's defences: security headers on every response, the failed-login limit,
server-side sessions behind Starlette's signed cookie, CSRF tokens, local-only redirects, and the
audit log of who did what. The routes that use them are in views.py.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from collections import defaultdict, deque

from sqlalchemy.engine import Engine
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.clinic import accounts

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'none'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
}
LOGIN_ATTEMPTS_PER_MINUTE = 10


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def add_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, add_headers if scope["type"] == "http" else send)


class LoginLimiter:
    """At most N failed logins per client address per minute (in memory, per process); with the
    per-account lock-out this stops both guessing one password and spraying many accounts."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._failures: dict[str, deque[float]] = defaultdict(deque)

    def allow(self, client: str) -> bool:
        failures = self._failures[client]
        while failures and failures[0] < time.monotonic() - 60:
            failures.popleft()
        return len(failures) < self.per_minute

    def failed(self, client: str) -> None:
        self._failures[client].append(time.monotonic())


def safe_next(target: str | None) -> str:
    """Only local absolute paths: no scheme, no host, no '//' or '/\\' tricks."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\n" in target or "\r" in target:
        return "/"
    return target


def staff_of(request: Request) -> accounts.Staff | None:
    """The signed-in account, as `signed_in` found it for this request (None before)."""
    return getattr(request.state, "staff", None)


async def signed_in(request: Request) -> accounts.Staff | None:
    """Check the cookie's session against the database: a session ended by logging out, a
    disabled account or a new password is refused from the next request on."""
    if not hasattr(request.state, "staff"):
        sid = request.session.get("sid")
        request.state.staff = await asyncio.to_thread(accounts.session_staff, engine_of(request), sid) if sid else None
        if request.state.staff is None and sid:
            request.session.clear()
    return request.state.staff


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def checked_form(request: Request) -> FormData | None:
    form = await request.form()
    sent, expected = str(form.get("csrf", "")), request.session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), str(expected).encode()):
        return None
    return form


async def audit(request: Request, action: str, target: str = "", detail: str = "") -> None:
    staff = staff_of(request)
    await asyncio.to_thread(accounts.audit, engine_of(request), staff.username if staff else "-", action, target, detail)


def engine_of(request: Request) -> Engine:
    return request.app.state.engine

"""The clinic review web app (Starlette + Jinja2, server-rendered; `python -m bot clinic`).

Starlette and Jinja2 because they fit Rasa's pins (current FastAPI does not). Security:
every route but /login needs a session; the session is Starlette's signed cookie (HttpOnly,
SameSite=Strict, Secure when `CLINIC_HTTPS_ONLY`); every form carries a per-session CSRF
token; login is rate-limited per client address and accounts lock after repeated failures;
responses carry CSP, frame, sniffing, referrer and no-store headers; `next` redirects only to
local paths; Jinja2 autoescapes everything patients wrote. Every view and export is audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send

from bot.clinic import accounts, alerts, conversations, enrolments, exports, retention
from bot.clinic.conversations import LEVELS_BY_SEVERITY, Filters
from bot.clinic.schema import create_tables

log = logging.getLogger("bot.clinic")
TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
TEMPLATES.env.filters["when"] = lambda ts: exports.iso(ts).replace("T", " ").replace("Z", " UTC") if ts else ""
TEMPLATES.env.filters["label"] = conversations.symptom_label
TEMPLATES.env.globals["LEVELS"] = LEVELS_BY_SEVERITY
TEMPLATES.env.globals["therapy_name"] = conversations.therapy_name
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
        async def add_headers(message: dict) -> None:
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


def _safe_next(target: str | None) -> str:
    """Only local absolute paths: no scheme, no host, no '//' or '/\\' tricks."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\n" in target or "\r" in target:
        return "/"
    return target


def _staff(request: Request) -> accounts.Staff | None:
    user = request.session.get("user")
    return accounts.Staff(user["name"], user["role"]) if isinstance(user, dict) else None


def _csrf(request: Request) -> str:
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


async def _checked_form(request: Request) -> FormData | None:
    form = await request.form()
    sent, expected = str(form.get("csrf", "")), request.session.get("csrf", "")
    if not expected or not hmac.compare_digest(sent.encode(), str(expected).encode()):
        return None
    return form


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    context = {"staff": _staff(request), "csrf": _csrf(request), **context}
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status)


Handler = Callable[[Request], Awaitable[Response]]


def login_required(admin: bool = False) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            staff = _staff(request)
            if staff is None:
                return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
            if admin and not staff.is_admin:
                await _audit(request, "denied", request.url.path)
                return page(request, "error.html", message="Admins only.", status=403)
            return await handler(request)

        return guarded

    return wrap


async def _audit(request: Request, action: str, target: str = "", detail: str = "") -> None:
    staff = _staff(request)
    await asyncio.to_thread(accounts.audit, _engine(request), staff.username if staff else "-", action, target, detail)


def _engine(request: Request) -> Engine:
    return request.app.state.engine


# ---------------------------------------------------------------------- auth
async def login_page(request: Request) -> Response:
    return page(request, "login.html", next=_safe_next(request.query_params.get("next")), error="")


async def login(request: Request) -> Response:
    form = await _checked_form(request)
    if form is None:
        return page(request, "login.html", next="/", error="Your session expired; please try again.", status=400)
    target = _safe_next(str(form.get("next", "/")))
    client = request.client.host if request.client else "?"
    if not request.app.state.login_limiter.allow(client):
        return page(request, "login.html", next=target, error="Too many attempts; wait a minute.", status=429)
    username, password = str(form.get("username", ""))[:80], str(form.get("password", ""))[:1000]
    staff, why = await asyncio.to_thread(accounts.authenticate, _engine(request), username, password)
    if staff is None:
        request.app.state.login_limiter.failed(client)
        await asyncio.to_thread(accounts.audit, _engine(request), username or "-", "login-failed", "", why)
        message = "This account is locked after repeated failures; try again later." if why == "locked" else "Wrong username or password."
        return page(request, "login.html", next=target, error=message, status=401)
    request.session.clear()  # new session on login (no fixation)
    request.session["user"] = {"name": staff.username, "role": staff.role}
    request.session["csrf"] = secrets.token_urlsafe(32)
    await _audit(request, "login")
    return RedirectResponse(target, status_code=303)


@login_required()
async def logout(request: Request) -> Response:
    if await _checked_form(request) is None:
        return page(request, "error.html", message="Invalid form.", status=400)
    await _audit(request, "logout")
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


# ---------------------------------------------------------------------- pages
@login_required()
async def conversation_list(request: Request) -> Response:
    filters = Filters.parse(request.query_params)
    engine = _engine(request)
    rows, total = await asyncio.to_thread(conversations.list_conversations, engine, filters)
    counts = await asyncio.to_thread(conversations.level_counts, engine)
    await _audit(request, "view-list", "", urlencode(filters.query(filters.page)))
    pages = max(1, -(-total // conversations.PAGE_SIZE))
    return page(
        request,
        "conversations.html",
        rows=rows,
        total=total,
        counts=counts,
        filters=filters,
        pages=pages,
        query=lambda **change: urlencode({**filters.query(filters.page), **change}),
        export_query=urlencode(filters.query()),
        symptoms=sorted(conversations.load_knowledge_base().symptoms),
    )


def _download(chunks: Any, filename: str) -> Response:
    return StreamingResponse(
        chunks, media_type="text/csv; charset=utf-8", headers={"Content-Disposition": f'attachment; filename="{filename}"'}
    )


def _conversation_route(action: str, render: Callable[[Request, conversations.Conversation], Response]) -> Handler:
    """A page or export of one conversation: load it (404 if unknown), audit `action`, render."""

    @login_required()
    async def handler(request: Request) -> Response:
        conv = await asyncio.to_thread(conversations.load_conversation, _engine(request), request.path_params["sender_id"])
        if conv is None:
            return page(request, "error.html", message="No such conversation.", status=404)
        await _audit(request, action, conv.patient)
        return render(request, conv)

    return handler


conversation_page = _conversation_route("view-conversation", lambda request, conv: page(request, "conversation.html", conv=conv))
export_conversation_csv = _conversation_route(
    "export-conversation-csv", lambda _, conv: _download(exports.conversation_csv(conv), f"conversation-{conv.patient}.csv")
)
export_conversation_fhir = _conversation_route(
    "export-conversation-fhir",
    lambda _, conv: JSONResponse(
        exports.fhir_bundle(conv, time.time()),
        media_type="application/fhir+json",
        headers={"Content-Disposition": f'attachment; filename="conversation-{conv.patient}.fhir.json"'},
    ),
)


@login_required()
async def export_list_csv(request: Request) -> Response:
    filters = Filters.parse(request.query_params)
    await _audit(request, "export-list-csv", "", urlencode(filters.query()))
    return _download(exports.list_csv(conversations.iter_conversations(_engine(request), filters)), "conversations.csv")


@login_required()
async def trends(request: Request) -> Response:
    from bot.clinic import charts

    engine = _engine(request)
    days = await asyncio.to_thread(conversations.levels_per_day, engine)
    top = await asyncio.to_thread(conversations.top_symptoms, engine)
    await _audit(request, "view-trends")
    return page(
        request,
        "trends.html",
        levels_svg=await asyncio.to_thread(charts.levels_per_day_svg, days),
        symptoms_svg=await asyncio.to_thread(charts.top_symptoms_svg, top),
        top=top,
    )


@login_required(admin=True)
async def enrolments_page(request: Request) -> Response:
    engine = _engine(request)
    created, error = None, ""
    if request.method == "POST":
        form = await _checked_form(request)
        if form is None:
            return page(request, "error.html", message="Invalid form.", status=400)
        try:
            created = await asyncio.to_thread(
                enrolments.create,
                engine,
                str(form.get("label", "")),
                str(form.get("therapy", "")),
                str(form.get("infusion_date", "")),
                _staff(request).username,  # type: ignore[union-attr]
            )
            await _audit(request, "create-enrolment", created.label)
        except enrolments.EnrolmentError as exc:
            error = str(exc)
    else:
        await _audit(request, "view-enrolments")
    therapies = sorted(conversations.load_knowledge_base().therapies, key=lambda t: t.name.lower())
    rows = await asyncio.to_thread(enrolments.all_enrolments, engine)
    return page(request, "enrolments.html", rows=rows, therapies=therapies, created=created, error=error, status=400 if error else 200)


@login_required()
async def patient_page(request: Request) -> Response:
    code = request.path_params["code"]
    engine = _engine(request)
    enrolment = await asyncio.to_thread(enrolments.find, engine, code)
    if enrolment is None:
        return page(request, "error.html", message="No such patient.", status=404)
    timeline = await asyncio.to_thread(conversations.patient_timeline, engine, enrolment.code)
    convs = [await asyncio.to_thread(conversations.load_conversation, engine, row.sender_id) for row in timeline]
    await _audit(request, "view-patient", enrolment.label)
    return page(request, "patient.html", enrolment=enrolment, conversations=[c for c in convs if c is not None])


@login_required()
async def alerts_page(request: Request) -> Response:
    rows = await asyncio.to_thread(alerts.all_alerts, _engine(request))
    await _audit(request, "view-alerts")
    config = request.app.state.alert_config
    return page(request, "alerts.html", rows=rows, channels=config.channels, levels=config.levels, pseudonym=conversations.pseudonym)


@login_required(admin=True)
async def audit_page(request: Request) -> Response:
    entries = await asyncio.to_thread(accounts.audit_entries, _engine(request))
    retention_runs = await asyncio.to_thread(retention.runs, _engine(request))
    await _audit(request, "view-audit")
    return page(request, "audit.html", entries=entries, retention_runs=retention_runs)


async def not_found(request: Request, exc: Exception) -> Response:
    if _staff(request) is None:
        return RedirectResponse("/login", status_code=303)
    return page(request, "error.html", message="Not found.", status=404)


# ---------------------------------------------------------------------- app
async def _keep_summaries_fresh(app: Starlette, interval: float) -> None:
    """Fold new events into the summaries, raise alerts for levels reached, send due alerts."""
    engine, config = app.state.engine, app.state.alert_config
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while True:
            try:
                reached = await asyncio.to_thread(conversations.refresh, engine)
                if reached and config.channels:
                    await asyncio.to_thread(alerts.raise_alerts, engine, config, reached)
                if config.channels:
                    await alerts.deliver_due(engine, config, session)
            except Exception as exc:  # keep serving; the next round retries
                log.error("clinic.refresh.failed type=%s", type(exc).__name__)
            await asyncio.sleep(interval)


def create_app(
    engine: Engine,
    secret_key: str,
    https_only: bool = False,
    refresh_interval: float = 1.0,
    alert_config: alerts.AlertConfig | None = None,
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await asyncio.to_thread(create_tables, engine)
        task = asyncio.create_task(_keep_summaries_fresh(app, refresh_interval))
        log.info("clinic.ready")
        yield
        task.cancel()

    app = Starlette(
        routes=[
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/", conversation_list),
            Route("/export/conversations.csv", export_list_csv),
            Route("/conversations/{sender_id:str}", conversation_page),
            Route("/conversations/{sender_id:str}/export.csv", export_conversation_csv),
            Route("/conversations/{sender_id:str}/fhir.json", export_conversation_fhir),
            Route("/trends", trends),
            Route("/admin/audit", audit_page),
            Route("/alerts", alerts_page),
            Route("/admin/enrolments", enrolments_page, methods=["GET", "POST"]),
            Route("/patients/{code:str}", patient_page),
            Mount("/static", StaticFiles(directory=str(Path(__file__).with_name("static"))), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret_key,
                session_cookie="crs_clinic",
                max_age=8 * 3600,
                same_site="strict",
                https_only=https_only,
            ),
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.alert_config = alert_config or alerts.AlertConfig(levels=())
    app.state.login_limiter = LoginLimiter(LOGIN_ATTEMPTS_PER_MINUTE)
    return app

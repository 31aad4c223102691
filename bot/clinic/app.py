"""The clinic review web app (Starlette + Jinja2, server-rendered; `python -m bot clinic`).

Starlette and Jinja2 because they fit Rasa's pins (current FastAPI does not). Security
(security.py): every route but /login and /health needs a session; the session is Starlette's
signed cookie (HttpOnly, SameSite=Strict, Secure when `CLINIC_HTTPS_ONLY`) naming a server-side
session; every form carries a per-session CSRF token; login is rate-limited per client address
and accounts lock after repeated failures; responses carry CSP, frame, sniffing, referrer and
no-store headers; `next` redirects only to local paths; Jinja2 autoescapes everything patients
wrote (rendering.py). Every view and export is audited (views.py). The background work (summaries,
escalations, alerts) is the clinic worker's (worker.py), so this app scales to several processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from zoneinfo import ZoneInfo

from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from bot.checkins.store import create_checkin_tables
from bot.clinic import accounts, alerts
from bot.clinic.security import LOGIN_ATTEMPTS_PER_MINUTE, LoginLimiter, SecurityHeaders
from bot.clinic.views import (
    alerts_page,
    audit_page,
    conversation_list,
    conversation_page,
    enrolments_page,
    export_conversation_csv,
    export_conversation_fhir,
    export_list_csv,
    export_response_times_csv,
    export_worklist_csv,
    health,
    item_action,
    login,
    login_page,
    logout,
    not_found,
    password_page,
    patient_page,
    trends,
    worklist_page,
)  # fmt: skip

log = logging.getLogger("bot.clinic")


def create_app(
    engine: Engine,
    secret_key: str,
    https_only: bool = False,
    alert_config: alerts.AlertConfig | None = None,
    fhir_identifier_system: str | None = None,
    timezone: str = "UTC",
) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # its own tables and the check-ins' it shows (the relay may not have created them yet)
        await asyncio.to_thread(create_checkin_tables, engine)
        log.info("clinic.ready")  # summaries, escalations and alerts: the clinic worker (bot/clinic/worker.py)
        yield

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/login", login_page, methods=["GET"]),
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/account/password", password_page, methods=["GET", "POST"]),
            Route("/", conversation_list),
            Route("/export/conversations.csv", export_list_csv),
            Route("/conversations/{sender_id:str}", conversation_page),
            Route("/conversations/{sender_id:str}/export.csv", export_conversation_csv),
            Route("/conversations/{sender_id:str}/fhir.json", export_conversation_fhir),
            Route("/trends", trends),
            Route("/worklist", worklist_page),
            Route("/worklist/{item_id:int}/ack", item_action("ack"), methods=["POST"]),
            Route("/worklist/{item_id:int}/close", item_action("close"), methods=["POST"]),
            Route("/export/worklist.csv", export_worklist_csv),
            Route("/export/response-times.csv", export_response_times_csv),
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
                max_age=accounts.SESSION_SECONDS,
                same_site="strict",
                https_only=https_only,
            ),
        ],
        exception_handlers={404: not_found},
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.alert_config = alert_config or alerts.AlertConfig(levels=())
    # FHIR identifiers: the clinic's own system (FHIR_IDENTIFIER_SYSTEM), else one under this
    # app's address, never a placeholder domain.
    app.state.timezone = ZoneInfo(timezone)  # raises at start-up on an unknown zone name
    app.state.fhir_identifier_configured = bool(fhir_identifier_system)
    public = app.state.alert_config.public_url.rstrip("/") or "http://localhost"
    app.state.fhir_identifier_system = fhir_identifier_system or f"{public}/fhir/patient-id"
    app.state.login_limiter = LoginLimiter(LOGIN_ATTEMPTS_PER_MINUTE)
    return app

"""The clinic app's routes: login, the conversation list and transcripts, exports, trends, the
worklist, enrolments, patient pages, alerts, the audit log, health. Every route but /login and
/health needs a session (`login_required`); every view and export is audited."""

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import date, datetime
from typing import Any
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from bot.clinic import accounts, alerts, charts, enrolments, exports, labels, queries, retention, stats, transcript, worklist
from bot.clinic.labels import LEVELS_BY_SEVERITY
from bot.clinic.queries import Filters
from bot.clinic.rendering import page
from bot.clinic.security import audit, checked_form, engine_of, safe_next, signed_in, staff_of
from bot.clinic.worker import stalled
from bot.clinical.knowledge import load_knowledge_base

log = logging.getLogger("bot.clinic")
WORKLIST_PAGE = 100


Handler = Callable[[Request], Awaitable[Response]]


def login_required(admin: bool = False) -> Callable[[Handler], Handler]:
    def wrap(handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            staff = await signed_in(request)
            if staff is not None:  # two indexed reads per page, in one trip to a thread
                request.state.open_items, request.state.worker_stale = await asyncio.to_thread(_menu_state, engine_of(request))
            if staff is None:
                return RedirectResponse(f"/login?{urlencode({'next': request.url.path})}", status_code=303)
            if admin and not staff.is_admin:
                await audit(request, "denied", request.url.path)
                return page(request, "error.html", message="Admins only.", status=403)
            return await handler(request)

        return guarded

    return wrap


def _menu_state(engine: Engine) -> tuple[int, dict[str, float | None] | None]:
    """What every signed-in page's header shows: the open items, and whether the worker stopped."""
    return worklist.open_count(engine), stalled(engine)


# ---------------------------------------------------------------------- auth
async def login_page(request: Request) -> Response:
    return page(request, "login.html", next=safe_next(request.query_params.get("next")), error="")


async def login(request: Request) -> Response:
    form = await checked_form(request)
    if form is None:
        return page(request, "login.html", next="/", error="Your session expired; please try again.", status=400)
    target = safe_next(str(form.get("next", "/")))
    client = request.client.host if request.client else "?"
    if not request.app.state.login_limiter.allow(client):
        return page(request, "login.html", next=target, error="Too many attempts; wait a minute.", status=429)
    username, password = str(form.get("username", ""))[:80], str(form.get("password", ""))[:1000]
    staff, why = await asyncio.to_thread(accounts.authenticate, engine_of(request), username, password)
    if staff is None:
        request.app.state.login_limiter.failed(client)
        await asyncio.to_thread(accounts.audit, engine_of(request), username or "-", "login-failed", "", why)
        message = "This account is locked after repeated failures; try again later." if why == "locked" else "Wrong username or password."
        return page(request, "login.html", next=target, error=message, status=401)
    request.session.clear()  # new session on login (no fixation)
    request.session["sid"] = await asyncio.to_thread(accounts.start_session, engine_of(request), staff.username)
    request.session["csrf"] = secrets.token_urlsafe(32)
    request.state.staff = staff
    await audit(request, "login")
    return RedirectResponse(target, status_code=303)


@login_required()
async def logout(request: Request) -> Response:
    if await checked_form(request) is None:
        return page(request, "error.html", message="Invalid form.", status=400)
    await audit(request, "logout")
    # every session of the account, not only this browser's: a phone left signed in is signed out too
    await asyncio.to_thread(accounts.end_sessions, engine_of(request), staff_of(request).username)  # type: ignore[union-attr]
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@login_required()
async def password_page(request: Request) -> Response:
    """Change one's own password; every other session of the account ends, this one goes on."""
    message, error, status = "", "", 200
    if request.method == "POST":
        form = await checked_form(request)
        if form is None:
            return page(request, "error.html", message="Invalid form.", status=400)
        username = staff_of(request).username  # type: ignore[union-attr]
        current, new, again = (str(form.get(k, ""))[:1000] for k in ("current", "new", "again"))
        try:
            if new != again:
                raise accounts.AccountError("The two new passwords differ.")
            await asyncio.to_thread(accounts.change_own_password, engine_of(request), username, current, new)
        except accounts.AccountError as exc:
            error, status = str(exc), 400
            await audit(request, "password-change-failed")
        else:
            request.session["sid"] = await asyncio.to_thread(accounts.start_session, engine_of(request), username)
            await audit(request, "password-changed")
            message = "Password changed. Your other sessions have been signed out."
    return page(request, "password.html", message=message, error=error, status=status)


# ---------------------------------------------------------------------- pages
@login_required()
async def conversation_list(request: Request) -> Response:
    filters = Filters.parse(request.query_params)
    engine = engine_of(request)
    rows, total = await asyncio.to_thread(queries.list_conversations, engine, filters)
    counts = await asyncio.to_thread(queries.level_counts, engine)
    await audit(request, "view-list", "", urlencode(filters.query(filters.page)))
    pages = max(1, -(-total // queries.PAGE_SIZE))
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
        symptoms=sorted(load_knowledge_base().symptoms),
    )


def _attachment(filename: str) -> dict[str, str]:
    """Content-Disposition for any label ("Bed 7 — Zoë"): an ASCII fallback and the UTF-8 name
    (RFC 6266); a header must be Latin-1, so a raw non-ASCII label would be a 500."""
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in filename)
    return {"Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"}


def _download(chunks: Any, filename: str) -> Response:
    return StreamingResponse(chunks, media_type="text/csv; charset=utf-8", headers=_attachment(filename))


def _conversation_route(action: str, render: Callable[[Request, transcript.Conversation], Response]) -> Handler:
    """A page or export of one conversation: load it (404 if unknown), audit `action`, render."""

    @login_required()
    async def handler(request: Request) -> Response:
        conv = await asyncio.to_thread(transcript.load_conversation, engine_of(request), request.path_params["sender_id"])
        if conv is None:
            return page(request, "error.html", message="No such conversation.", status=404)
        await audit(request, action, conv.patient)
        return render(request, conv)

    return handler


def _conversation_page(request: Request, conv: transcript.Conversation) -> Response:
    items = worklist.for_conversation(engine_of(request), conv.sender_id)
    return page(request, "conversation.html", conv=conv, items=items, back=request.url.path)


conversation_page = _conversation_route("view-conversation", _conversation_page)
export_conversation_csv = _conversation_route(
    "export-conversation-csv", lambda _, conv: _download(exports.conversation_csv(conv), f"conversation-{conv.patient}.csv")
)


@login_required()
async def export_conversation_fhir(request: Request) -> Response:
    """A FHIR R4 Bundle of one conversation; `?type=transaction` to POST it to a FHIR server,
    which needs the clinic's own identifier system (a guessed one could merge patients)."""
    transaction = request.query_params.get("type") == "transaction"
    system = request.app.state.fhir_identifier_system
    if transaction and not request.app.state.fhir_identifier_configured:
        return page(request, "error.html", message="Set FHIR_IDENTIFIER_SYSTEM (your EHR's patient identifier system) first.", status=400)
    conv = await asyncio.to_thread(transcript.load_conversation, engine_of(request), request.path_params["sender_id"])
    if conv is None:
        return page(request, "error.html", message="No such conversation.", status=404)
    kind = "transaction" if transaction else "collection"
    await audit(request, "export-conversation-fhir", conv.patient, f"type={kind}")
    bundle = await asyncio.to_thread(exports.fhir_bundle, conv, time.time(), identifier_system=system, bundle_type=kind)
    return JSONResponse(bundle, media_type="application/fhir+json", headers=_attachment(f"conversation-{conv.patient}.fhir.json"))


@login_required()
async def export_list_csv(request: Request) -> Response:
    filters = Filters.parse(request.query_params)
    await audit(request, "export-list-csv", "", urlencode(filters.query()))
    return _download(exports.list_csv(queries.iter_conversations(engine_of(request), filters)), "conversations.csv")


@login_required()
async def trends(request: Request) -> Response:
    engine = engine_of(request)
    days = await asyncio.to_thread(stats.levels_per_day, engine)
    top = await asyncio.to_thread(stats.top_symptoms, engine)
    response_times = await asyncio.to_thread(worklist.response_times, engine, LEVELS_BY_SEVERITY)
    await audit(request, "view-trends")
    return page(
        request,
        "trends.html",
        response_times=[r for r in response_times if r["items"] or r["level"] in request.app.state.alert_config.levels],
        levels_svg=await asyncio.to_thread(charts.levels_per_day_svg, days),
        symptoms_svg=await asyncio.to_thread(charts.top_symptoms_svg, top),
        top=top,
    )


# ---------------------------------------------------------------------- worklist
@login_required()
async def worklist_page(request: Request) -> Response:
    return await _worklist(request)


def _worklist_filters(request: Request, default_status: str) -> tuple[str, str]:
    """(status, level) from the query, each one the worklist knows or its default."""
    status, level = request.query_params.get("status"), request.query_params.get("level")
    return (status if status in worklist.STATUSES else default_status), (level if level in LEVELS_BY_SEVERITY else "")


async def _worklist(request: Request, error: str = "", status_code: int = 200) -> Response:
    params = request.query_params
    status, level = _worklist_filters(request, "open")
    try:
        page_no = max(1, int(params.get("page", "1")))
    except ValueError:
        page_no = 1
    offset = (page_no - 1) * WORKLIST_PAGE
    items, total = await asyncio.to_thread(worklist.items, engine_of(request), status, level, WORKLIST_PAGE, offset)
    try:
        overdue = await asyncio.to_thread(enrolments.overdue_checkins, engine_of(request), time.time())
    except sa.exc.SQLAlchemyError as exc:  # the items above matter more than this list: never lose the page for it
        log.error("clinic.overdue_checkins.failed type=%s", type(exc).__name__)
        overdue = []
    await audit(request, "view-worklist", "", urlencode({"status": status, "level": level}))
    config: alerts.AlertConfig = request.app.state.alert_config
    query = urlencode({k: v for k, v in (("status", status), ("level", level)) if v})
    return page(
        request, "worklist.html", status_code, items=items, total=total, item_status=status, filter_level=level, now=time.time(),
        levels=config.levels, escalate_after=[(lv, config.escalate_after[lv]) for lv in config.levels if lv in config.escalate_after],
        escalation_channels=config.escalation_channels, error=error, query=query, back=f"/worklist?{query}",
        page_no=page_no, pages=max(1, -(-total // WORKLIST_PAGE)), escalate_seconds={lv: m * 60 for lv, m in config.escalate_after.items()},
        overdue=overdue,
    )  # fmt: skip


def item_action(action: str) -> Handler:
    """POST /worklist/{id}/ack|close: check the form, act as the signed-in nurse, audit, go back."""

    @login_required()
    async def handler(request: Request) -> Response:
        form = await checked_form(request)
        if form is None:
            return page(request, "error.html", message="Your session expired; please try again.", status=400)
        item_id, engine, staff = request.path_params["item_id"], engine_of(request), staff_of(request)
        item = await asyncio.to_thread(worklist.item, engine, item_id)
        if item is None:
            return page(request, "error.html", message="No such worklist item.", status=404)
        back = safe_next(str(form.get("back", "/worklist")))
        try:
            seen = str(form.get("level", "")) or None  # the level on the nurse's page
            if action == "ack":
                done = await asyncio.to_thread(worklist.acknowledge, engine, item_id, staff.username, seen)  # type: ignore[union-attr]
                await audit(request, "ack-item" if done else "ack-item-again", item.patient, f"item={item_id} level={item.level}")
            else:
                outcome, note = str(form.get("outcome", "")), str(form.get("note", ""))
                await asyncio.to_thread(worklist.close, engine, item_id, staff.username, outcome, note, seen)  # type: ignore[union-attr]
                await audit(request, "close-item", item.patient, f"item={item_id} level={item.level} outcome={outcome}")
        except worklist.WorklistError as exc:
            return await _worklist(request, error=str(exc), status_code=400)
        return RedirectResponse(f"{back}#item-{item_id}" if back.startswith("/worklist") else back, status_code=303)

    return handler


@login_required()
async def export_worklist_csv(request: Request) -> Response:
    status, level = _worklist_filters(request, "all")
    items, _ = await asyncio.to_thread(worklist.items, engine_of(request), status, level, 100_000)
    await audit(request, "export-worklist-csv", "", urlencode({"status": status, "level": level}))
    return _download(exports.worklist_csv(items), "worklist.csv")


@login_required()
async def export_response_times_csv(request: Request) -> Response:
    table = await asyncio.to_thread(worklist.response_times, engine_of(request), LEVELS_BY_SEVERITY)
    await audit(request, "export-response-times-csv")
    return _download(exports.response_times_csv(table), "response-times.csv")


@login_required(admin=True)
async def enrolments_page(request: Request) -> Response:
    engine = engine_of(request)
    created, error = None, ""
    form = await checked_form(request) if request.method == "POST" else None
    if request.method == "POST" and form is None:
        return page(request, "error.html", message="Invalid form.", status=400)
    if form is not None and form.get("checkins"):  # pause, resume or stop one enrolment's check-ins
        code, state = str(form.get("code", "")), str(form.get("checkins", ""))
        try:
            await asyncio.to_thread(enrolments.set_checkins, engine, code, state)
            await audit(request, "set-checkins", code, f"state={state}")
        except enrolments.EnrolmentError as exc:
            error = str(exc)
    elif form is not None:
        try:
            created = await asyncio.to_thread(
                enrolments.create,
                engine,
                str(form.get("label", "")),
                str(form.get("therapy", "")),
                str(form.get("infusion_date", "")),
                staff_of(request).username,  # type: ignore[union-attr]
                timezone=str(form.get("timezone", ""))[:64],
                dose_dates=str(form.get("dose_dates", ""))[:200],
            )
            await audit(request, "create-enrolment", created.label)
        except enrolments.EnrolmentError as exc:
            error = str(exc)
    else:
        await audit(request, "view-enrolments")
    therapies = sorted(load_knowledge_base().therapies, key=lambda t: t.name.lower())
    rows = await asyncio.to_thread(enrolments.all_enrolments, engine)
    return page(
        request, "enrolments.html", rows=rows, therapies=therapies, created=created, error=error, status=400 if error else 200,
        clinic_timezone=str(request.app.state.timezone), zones=COMMON_ZONES,
    )  # fmt: skip


# offered in the enrolment form's time-zone field (any IANA name is accepted)
COMMON_ZONES = (
    "America/New_York", "America/Chicago", "America/Denver", "America/Phoenix", "America/Los_Angeles", "America/Anchorage",
    "Pacific/Honolulu", "America/Puerto_Rico", "America/Toronto", "America/Vancouver", "Europe/London", "Europe/Berlin", "UTC",
)  # fmt: skip


@login_required()
async def patient_page(request: Request) -> Response:
    code = request.path_params["code"]
    engine = engine_of(request)
    enrolment = await asyncio.to_thread(enrolments.find, engine, code)
    if enrolment is None:
        return page(request, "error.html", message="No such patient.", status=404)
    timeline = await asyncio.to_thread(queries.patient_timeline, engine, enrolment.code)
    convs = [c for row in timeline if (c := await asyncio.to_thread(transcript.load_conversation, engine, row.sender_id))]
    readings = [(turn.at, v) for conv in convs for turn in conv.turns if turn.at for v in turn.vitals]
    checkins = await asyncio.to_thread(enrolments.checkins_of, engine, enrolment.code)
    plan = await asyncio.to_thread(enrolments.checkin_plan, engine, enrolment, str(request.app.state.timezone), time.time())
    neuro_checks = await asyncio.to_thread(enrolments.neuro_checks_of, engine, enrolment.code)
    await audit(request, "view-patient", enrolment.label)
    start = _infusion_start(enrolment, request.app.state.timezone)
    t = load_knowledge_base().thresholds["temperature"]
    chart = charts.vitals_chart(readings, start, t["fever_c"], t["high_fever_c"])
    return page(
        request, "patient.html", enrolment=enrolment, conversations=convs, readings=readings, chart=chart, chart_start=start,
        checkins=checkins, plan=plan, neuro_checks=_neuro_rows(neuro_checks),
    )  # fmt: skip


def _neuro_rows(checks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each check with its items not right, by the names data/neurocheck.yml gives them."""
    from bot.checkins.neuro import load_neuro_config, not_right

    config = load_neuro_config()
    return [{**c, "max": len(c["item_ids"].split(",")), "asked": len(c["answers"]), "not_right": not_right(config, c)} for c in checks]


def _infusion_start(enrolment: enrolments.Enrolment, zone: ZoneInfo) -> float | None:
    """Day 0 of the chart: midnight of the infusion date in the clinic's time zone."""
    with contextlib.suppress(ValueError, TypeError):
        day = date.fromisoformat(enrolment.infusion_date or "")
        return datetime(day.year, day.month, day.day, tzinfo=zone).timestamp()
    return None


@login_required()
async def alerts_page(request: Request) -> Response:
    rows = await asyncio.to_thread(alerts.all_alerts, engine_of(request))
    await audit(request, "view-alerts")
    config = request.app.state.alert_config
    return page(
        request, "alerts.html", rows=rows, channels=config.channels, escalation_channels=config.escalation_channels,
        levels=config.levels, pseudonym=labels.pseudonym,
    )  # fmt: skip


@login_required(admin=True)
async def audit_page(request: Request) -> Response:
    entries = await asyncio.to_thread(accounts.audit_entries, engine_of(request))
    retention_runs = await asyncio.to_thread(retention.runs, engine_of(request))
    await audit(request, "view-audit")
    return page(request, "audit.html", entries=entries, retention_runs=retention_runs)


async def health(request: Request) -> Response:
    """For probes (Kubernetes, `make status`): 200 when the app can read its database, else 503.
    Public and content-free: it says nothing about any patient."""

    def ping() -> dict[str, float | None] | None:
        with engine_of(request).connect() as conn:
            conn.exec_driver_sql("SELECT 1")
        return stalled(engine_of(request))

    try:
        stale = await asyncio.wait_for(asyncio.to_thread(ping), timeout=5)
    except Exception as exc:  # any failure to reach the database is "not ready"
        log.warning("clinic.health.database_unavailable type=%s", type(exc).__name__)  # the why in the log, not the answer
        return JSONResponse({"status": "database unavailable"}, status_code=503)
    # the app serves either way; the worker's state is for whoever watches (its own /health restarts it)
    return JSONResponse({"status": "ok", "worker": "stale" if stale else "ok"})


async def not_found(request: Request, exc: Exception) -> Response:
    if await signed_in(request) is None:
        return RedirectResponse("/login", status_code=303)
    return page(request, "error.html", message="Not found.", status=404)

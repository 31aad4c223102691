"""Pages: the Jinja2 templates (autoescaped: patients' words are shown, never run) with the
filters they use, and `page()`, which gives every page the signed-in account and its CSRF token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from bot.clinic import exports, labels, worklist
from bot.clinic.labels import LEVELS_BY_SEVERITY
from bot.clinic.security import csrf_token, staff_of

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).with_name("templates")))
TEMPLATES.env.filters["when"] = lambda ts: exports.iso(ts).replace("T", " ").replace("Z", " UTC") if ts else ""
TEMPLATES.env.filters["label"] = labels.symptom_label
TEMPLATES.env.globals["LEVELS"] = LEVELS_BY_SEVERITY
TEMPLATES.env.globals["therapy_name"] = labels.therapy_name
TEMPLATES.env.globals["duration"] = worklist.duration
TEMPLATES.env.globals["OUTCOMES"] = worklist.OUTCOMES
TEMPLATES.env.globals["STATUSES"] = worklist.STATUSES
TEMPLATES.env.globals["vital"] = labels.vital_text


def page(request: Request, template: str, status: int = 200, **context: Any) -> Response:
    staff = staff_of(request)
    context = {
        "staff": staff, "csrf": csrf_token(request), "open_items": getattr(request.state, "open_items", 0),
        "worker_stale": getattr(request.state, "worker_stale", None), **context,
    }  # fmt: skip
    return TEMPLATES.TemplateResponse(request, template, context, status_code=status)

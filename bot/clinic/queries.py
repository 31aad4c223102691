"""The conversation list: filters, pages and CSV iteration over the summaries, the level counts,
and one enrolled patient's conversations."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.clinic.labels import LEVELS_BY_SEVERITY, pseudonym, therapy_name
from bot.clinic.schema import ENROLMENTS, SUMMARIES
from bot.clinical.knowledge import LEVEL_RANK

PAGE_SIZE = 50


@dataclass(frozen=True)
class Filters:
    level: str = ""
    date_from: date | None = None
    date_to: date | None = None
    symptom: str = ""
    therapy: str = ""
    page: int = 1
    traffic: str = ""  # "" patients only, "test" evaluation/benchmark traffic only, "all" both

    @classmethod
    def parse(cls, params: Any) -> Filters:
        def day(name: str) -> date | None:
            try:
                return date.fromisoformat(params.get(name, ""))
            except ValueError:
                return None

        level = params.get("level", "")
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        return cls(
            level=level if level in LEVEL_RANK else "",
            date_from=day("from"),
            date_to=day("to"),
            symptom=params.get("symptom", "")[:60],
            therapy=params.get("therapy", "")[:60],
            page=page,
            traffic=params.get("traffic", "") if params.get("traffic", "") in ("test", "all") else "",
        )

    def query(self, page: int | None = None) -> dict[str, str]:
        """These filters as URL parameters (for paging and export links)."""
        values = {
            "level": self.level,
            "from": self.date_from.isoformat() if self.date_from else "",
            "to": self.date_to.isoformat() if self.date_to else "",
            "symptom": self.symptom,
            "therapy": self.therapy,
            "page": str(page) if page and page > 1 else "",
            "traffic": self.traffic,
        }
        return {k: v for k, v in values.items() if v}

    def where(self) -> list[Any]:
        conditions: list[Any] = []
        if self.traffic != "all":
            conditions.append(SUMMARIES.c.test.is_(sa.true() if self.traffic == "test" else sa.false()))
        if self.level:
            conditions.append(SUMMARIES.c.level == self.level)
        if self.date_from:
            conditions.append(SUMMARIES.c.last_at >= utc_midnight(self.date_from))
        if self.date_to:
            conditions.append(SUMMARIES.c.first_at < utc_midnight(self.date_to) + 86400)
        if self.symptom:
            padded = sa.literal(" ") + SUMMARIES.c.symptoms + sa.literal(" ")
            conditions.append(padded.contains(f" {self.symptom} ", autoescape=True))
        if self.therapy:
            conditions.append(
                sa.or_(
                    sa.func.lower(SUMMARIES.c.therapy).contains(self.therapy.lower(), autoescape=True),
                    sa.func.lower(ENROLMENTS.c.therapy).contains(self.therapy.lower(), autoescape=True),
                )
            )
        return conditions


def utc_midnight(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@dataclass
class Row:
    sender_id: str
    patient: str
    linked: bool
    therapy: str
    first_at: float | None
    last_at: float | None
    level: str
    symptoms: list[str]
    messages: int


def _rows(result: Any) -> list[Row]:
    return [
        Row(
            sender_id=r.sender_id,
            patient=r.label or pseudonym(r.sender_id),
            linked=r.label is not None,
            therapy=therapy_name(r.enrolled_therapy) or r.therapy or "",
            first_at=r.first_at,
            last_at=r.last_at,
            level=r.level,
            symptoms=r.symptoms.split() if r.symptoms else [],
            messages=r.messages,
        )
        for r in result
    ]


def _list_query(filters: Filters) -> Any:
    joined = SUMMARIES.outerjoin(ENROLMENTS, ENROLMENTS.c.code == SUMMARIES.c.enrolment_code)
    return (
        sa.select(SUMMARIES, ENROLMENTS.c.label, ENROLMENTS.c.therapy.label("enrolled_therapy"))
        .select_from(joined)
        .where(*filters.where())
        .order_by(SUMMARIES.c.level_rank.desc(), SUMMARIES.c.last_at.desc(), SUMMARIES.c.sender_id)
    )


def list_conversations(engine: Engine, filters: Filters, page_size: int = PAGE_SIZE) -> tuple[list[Row], int]:
    """One page of conversations, emergency first then most recent; and the total count."""
    joined = SUMMARIES.outerjoin(ENROLMENTS, ENROLMENTS.c.code == SUMMARIES.c.enrolment_code)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(joined).where(*filters.where())).scalar_one()
        result = conn.execute(_list_query(filters).limit(page_size).offset((filters.page - 1) * page_size))
        return _rows(result), int(total)


def iter_conversations(engine: Engine, filters: Filters, chunk: int = 2000) -> Any:
    """Every conversation matching the filters (for exports), streamed in chunks."""
    offset = 0
    while True:
        with engine.connect() as conn:
            rows = _rows(conn.execute(_list_query(filters).limit(chunk).offset(offset)))
        yield from rows
        if len(rows) < chunk:
            return
        offset += chunk


def level_counts(engine: Engine, now: float | None = None) -> dict[str, dict[str, int]]:
    """Conversations per highest level, active today (UTC) and in the last 7 days."""
    now = now or time.time()
    today = utc_midnight(datetime.fromtimestamp(now, UTC).date())
    counts: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for name, since in (("today", today), ("week", today - 6 * 86400)):
            result = conn.execute(
                sa.select(SUMMARIES.c.level, sa.func.count())
                .where(SUMMARIES.c.last_at >= since, SUMMARIES.c.test.is_(sa.false()))
                .group_by(SUMMARIES.c.level)
            )
            found = dict(result.all())
            counts[name] = {level: int(found.get(level, 0)) for level in LEVELS_BY_SEVERITY}
    return counts


def patient_timeline(engine: Engine, code: str) -> list[Row]:
    """Every conversation of one enrolled patient, oldest first."""
    filters_query = _list_query(Filters()).where(SUMMARIES.c.enrolment_code == code).order_by(None).order_by(SUMMARIES.c.first_at)
    with engine.connect() as conn:
        return _rows(conn.execute(filters_query))

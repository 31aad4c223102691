"""Trends over the summaries: conversations by level per day, the most reported symptoms."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.clinic.labels import LEVELS_BY_SEVERITY
from bot.clinic.queries import utc_midnight
from bot.clinic.schema import SUMMARIES


def levels_per_day(engine: Engine, days: int = 30, now: float | None = None) -> list[tuple[date, dict[str, int]]]:
    """Conversations by highest level, per day of their last message (UTC)."""
    now = now or time.time()
    start = utc_midnight(datetime.fromtimestamp(now, UTC).date()) - (days - 1) * 86400
    per_day: dict[date, Counter] = {}
    with engine.connect() as conn:
        for last_at, level in conn.execute(
            sa.select(SUMMARIES.c.last_at, SUMMARIES.c.level).where(SUMMARIES.c.last_at >= start, SUMMARIES.c.test.is_(sa.false()))
        ):
            per_day.setdefault(datetime.fromtimestamp(last_at, UTC).date(), Counter())[level] += 1
    first = datetime.fromtimestamp(start, UTC).date()
    return [
        (d, {lvl: per_day.get(d, Counter())[lvl] for lvl in LEVELS_BY_SEVERITY})
        for d in (date.fromordinal(first.toordinal() + i) for i in range(days))
    ]


def top_symptoms(engine: Engine, limit: int = 12) -> list[tuple[str, int]]:
    counts: Counter = Counter()
    with engine.connect() as conn:
        for (symptoms,) in conn.execute(
            sa.select(SUMMARIES.c.symptoms).where(SUMMARIES.c.symptoms != "", SUMMARIES.c.test.is_(sa.false()))
        ):
            counts.update(symptoms.split())
    return counts.most_common(limit)

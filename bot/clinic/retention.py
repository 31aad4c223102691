"""Retention: delete conversations whose last message is older than the clinic's period.

`python -m bot retention` (or `make retention`) deletes their events, summary rows, worklist items and alerts
in one transaction and records the run (when, cutoff, how many) in `clinic_retention_runs`,
shown to admins. Run it daily (cron or a systemd timer). Nothing of the content is kept.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.clinic.indexer import refresh
from bot.clinic.schema import EVENTS, RETENTION_RUNS, SUMMARIES, create_tables, delete_clinic_rows, rewind_events_mark
from bot.clinic.worklist import Tracking
from bot.db import scrub_deleted


@dataclass(frozen=True)
class RetentionRun:
    cutoff: float
    conversations: int
    events: int


def apply_retention(engine: Engine, days: float, now: float | None = None, tracking: Tracking | None = None) -> RetentionRun:
    """`tracking`: the clinic's alert levels and channels (bot.clinic.alerts.AlertConfig.tracking)."""
    if days <= 0:
        raise ValueError("the retention period must be positive")
    now = now or time.time()
    cutoff = now - days * 86400
    create_tables(engine)
    # summaries must know every conversation's last message first; folding here opens worklist
    # items and queues alerts as the clinic worker would (the events it folds are not folded again)
    refresh(engine, tracking)
    with engine.begin() as conn:
        old = [r[0] for r in conn.execute(sa.select(SUMMARIES.c.sender_id).where(SUMMARIES.c.last_at < cutoff))]
        events = 0
        for start in range(0, len(old), 500):
            chunk = old[start : start + 500]
            events += conn.execute(sa.delete(EVENTS).where(EVENTS.c.sender_id.in_(chunk))).rowcount or 0
            delete_clinic_rows(conn, chunk)
        rewind_events_mark(conn)
        conn.execute(sa.insert(RETENTION_RUNS).values(at=now, cutoff=cutoff, conversations=len(old), events=events))
    if old:
        scrub_deleted(engine)
    return RetentionRun(cutoff, len(old), events)


def runs(engine: Engine, limit: int = 50) -> list[dict]:
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(RETENTION_RUNS).order_by(RETENTION_RUNS.c.id.desc()).limit(limit)).mappings()]

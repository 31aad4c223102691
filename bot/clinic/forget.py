"""What a patient's `/forget` removes on the clinic side, and the trace it leaves.

The conversation's summary row, alerts, check-ins, neuro checks and the chat's link to its
enrolment go with its events; an audit entry records that a
conversation was deleted at the patient's request, under its pseudonym only (no content).
"""

from __future__ import annotations

import logging
import time

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from bot.checkins.store import CHATS
from bot.clinic.labels import pseudonym
from bot.clinic.schema import AUDIT, WORKLIST, create_tables, delete_clinic_rows

log = logging.getLogger(__name__)


def forget_clinic_rows(engine: Engine, sender_id: str) -> None:
    try:
        create_tables(engine)
        with engine.begin() as conn:
            # an open worklist item goes with the conversation (the patient asked): the trace says so
            waiting = conn.execute(
                sa.select(sa.func.count()).select_from(WORKLIST).where(WORKLIST.c.sender_id == sender_id, WORKLIST.c.closed_at.is_(None))
            ).scalar_one()
            delete_clinic_rows(conn, [sender_id])
            if sa.inspect(conn).has_table(CHATS.name):  # the chat's link to its enrolment: no more check-ins until /start again
                conn.execute(sa.delete(CHATS).where(CHATS.c.sender_id == sender_id))
            detail = f"open worklist items deleted: {waiting}" if waiting else ""
            conn.execute(
                sa.insert(AUDIT).values(at=time.time(), username="patient", action="forget", target=pseudonym(sender_id), detail=detail)
            )
    except sa.exc.SQLAlchemyError as exc:  # the events are gone already; report, do not undo
        log.error("clinic rows of a forgotten conversation not removed (%s)", type(exc).__name__)
        raise

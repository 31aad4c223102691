"""The check-in tables, in the product's database (the relay's replicas share them).

`checkin_chats`: which Telegram chat answers for which enrolment (linked by `/start <code>`),
and whether the patient turned check-ins off. `checkins`: one row per check-in, keyed by
enrolment and local time (schedule.Due.key): inserting it is the claim, so two relay replicas
or a restarted one never send the same check-in twice.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

CHATS = sa.Table(
    "checkin_chats",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("chat_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("sender_id", sa.String(255), nullable=False),
    sa.Column("linked_at", sa.Float, nullable=False),
    sa.Column("opted_out", sa.Boolean, nullable=False, server_default=sa.false()),  # the patient's /checkins off
)

CHECKINS = sa.Table(
    "checkins",
    metadata,
    sa.Column("key", sa.String(120), primary_key=True),
    sa.Column("code", sa.String(64), nullable=False, index=True),
    sa.Column("chat_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("sender_id", sa.String(255), nullable=False),
    sa.Column("due_at", sa.Float, nullable=False, index=True),
    sa.Column("day", sa.Integer, nullable=False),
    sa.Column("missed_level", sa.String(16), nullable=False),
    sa.Column("neuro", sa.Boolean, nullable=False),
    # claimed → sent → (reminded) → answered | missed; not_sent: its time passed while no relay ran
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(64), nullable=False),
    sa.Column("claimed_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.Column("reminded_at", sa.Float),
    sa.Column("answered_at", sa.Float),
    sa.Column("missed_at", sa.Float),
)

# One caregiver neuro check (neuro.py): its answers in order, one letter per item ("p" right,
# "f" not right). Compared per sender (the pseudonymous chat), the first complete one is the baseline.
NEURO_CHECKS = sa.Table(
    "neuro_checks",
    metadata,
    sa.Column("id", sa.String(24), primary_key=True),
    sa.Column("sender_id", sa.String(255), nullable=False, index=True),
    sa.Column("chat_id", sa.BigInteger, nullable=False),
    sa.Column("code", sa.String(64)),  # the enrolment, when the chat is linked to one
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("last_at", sa.Float),  # the last answer: a check left this long (abandon_after_min) is abandoned
    sa.Column("finished_at", sa.Float),
    # open → complete | escalated (an item right before was not right) | stopped | abandoned
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("answers", sa.String(64), nullable=False, server_default=""),
    sa.Column("item_ids", sa.Text, nullable=False),  # the items asked, comma-separated (data/neurocheck.yml may change)
    sa.Column("score", sa.Integer),
    sa.Column("baseline", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("baseline_score", sa.Integer),  # the baseline's, when this check was compared with one
)


def create_checkin_tables(engine: sa.engine.Engine) -> None:
    from bot.clinic.schema import add_missing_columns, create_tables

    create_tables(engine)  # the enrolments and worklist it reads and writes
    metadata.create_all(engine)
    add_missing_columns(engine, metadata)

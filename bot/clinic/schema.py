"""Tables of the clinic review app, in the same database as Rasa's tracker store.

Rasa owns `events` (mirrored read-only here as `EVENTS`, never created by us). Everything the
clinic adds lives in its own tables, created on start-up: staff accounts, the audit log,
enrolment codes, one summary row per conversation (kept up to date incrementally from
`events`, so the list page never scans 200,000 events), alerts and retention runs.
All SQL is SQLAlchemy Core with bound parameters.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

STAFF = sa.Table(
    "clinic_staff",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("username", sa.String(80), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),  # viewer | admin
    sa.Column("failed_logins", sa.Integer, nullable=False, default=0),
    sa.Column("locked_until", sa.Float),
    sa.Column("created_at", sa.Float, nullable=False),
)

AUDIT = sa.Table(
    "clinic_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("username", sa.String(80), nullable=False),
    sa.Column("action", sa.String(40), nullable=False),
    sa.Column("target", sa.String(255), nullable=False, default=""),
    sa.Column("detail", sa.Text, nullable=False, default=""),
)

ENROLMENTS = sa.Table(
    "clinic_enrolments",
    metadata,
    sa.Column("code", sa.String(64), primary_key=True),
    sa.Column("label", sa.String(120), nullable=False),
    sa.Column("therapy", sa.String(120), nullable=False, default=""),
    sa.Column("infusion_date", sa.String(10)),  # ISO date
    sa.Column("created_by", sa.String(80), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

SUMMARIES = sa.Table(
    "clinic_conversations",
    metadata,
    sa.Column("sender_id", sa.String(255), primary_key=True),
    sa.Column("enrolment_code", sa.String(64), index=True),
    sa.Column("first_at", sa.Float),
    sa.Column("last_at", sa.Float, index=True),
    sa.Column("level_rank", sa.Integer, nullable=False, default=0, index=True),
    sa.Column("level", sa.String(16), nullable=False, default="none"),
    sa.Column("symptoms", sa.Text, nullable=False, default=""),  # space-separated ids, for filtering
    sa.Column("therapy", sa.String(120), nullable=False, default=""),
    sa.Column("messages", sa.Integer, nullable=False, default=0),
)

STATE = sa.Table(
    "clinic_state",
    metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
)

ALERTS = sa.Table(
    "clinic_alerts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sender_id", sa.String(255), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("channel", sa.String(16), nullable=False),  # webhook | telegram
    sa.Column("status", sa.String(16), nullable=False),  # pending | sent | failed
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.String(255), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("next_try_at", sa.Float, nullable=False),
    sa.Column("sent_at", sa.Float),
    sa.UniqueConstraint("sender_id", "level", "channel", name="clinic_alert_once"),
)

RETENTION_RUNS = sa.Table(
    "clinic_retention_runs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("cutoff", sa.Float, nullable=False),
    sa.Column("conversations", sa.Integer, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
)

# Rasa's table (rasa.core.tracker_store.SQLTrackerStore.SQLEvent), read here, created by Rasa.
_rasa = sa.MetaData()
EVENTS = sa.Table(
    "events",
    _rasa,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sender_id", sa.String(255), nullable=False, index=True),
    sa.Column("type_name", sa.String(255), nullable=False),
    sa.Column("timestamp", sa.Float),
    sa.Column("intent_name", sa.String(255)),
    sa.Column("action_name", sa.String(255)),
    sa.Column("data", sa.Text),
)


def create_tables(engine: sa.engine.Engine) -> None:
    """Our tables, and Rasa's `events` if Rasa has not started yet (same definition as Rasa's)."""
    metadata.create_all(engine)
    _rasa.create_all(engine)

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
    sa.Column("disabled", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Server-side sessions: the signed cookie only names a row here, so logging out, disabling an
# account or changing its password ends its sessions at once (a signed cookie alone cannot be
# revoked before it expires). Only a hash of the session id is stored.
SESSIONS = sa.Table(
    "clinic_sessions",
    metadata,
    sa.Column("id_hash", sa.String(64), primary_key=True),
    sa.Column("username", sa.String(80), nullable=False, index=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float),
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
    # proactive check-ins (bot/checkins): active | paused | stopped, in this zone (CLINIC_TIMEZONE if null)
    sa.Column("checkins", sa.String(16), nullable=False, server_default="active"),
    sa.Column("timezone", sa.String(64)),
    # a bispecific's later (step-up) doses, ISO dates comma-separated: check-ins follow each dose too
    sa.Column("dose_dates", sa.String(200)),
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
    # Evaluation, benchmark and demo traffic (tagged by an authenticated caller): hidden from the
    # clinic's lists and counts by default, never on the worklist, never alerted.
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false(), index=True),
)

STATE = sa.Table(
    "clinic_state",
    metadata,
    sa.Column("key", sa.String(40), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
)

# The care team's worklist: one item per episode of a conversation at a level that alerts
# (CLINIC_ALERT_LEVELS). Open until a nurse closes it with an outcome; acknowledged on the way.
WORKLIST = sa.Table(
    "clinic_worklist",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sender_id", sa.String(255), nullable=False, index=True),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("level_rank", sa.Integer, nullable=False),
    sa.Column("reasons", sa.Text, nullable=False, default=""),  # newline-separated
    sa.Column("opened_at", sa.Float, nullable=False, index=True),  # when the conversation first reached it
    sa.Column("level_at", sa.Float, nullable=False),  # when it reached its present level (escalation clock)
    sa.Column("acked_at", sa.Float),
    sa.Column("acked_by", sa.String(80)),
    sa.Column("closed_at", sa.Float, index=True),
    sa.Column("closed_by", sa.String(80)),
    sa.Column("outcome", sa.String(32)),
    sa.Column("note", sa.Text, nullable=False, default=""),
    sa.Column("escalated_at", sa.Float),
    # at most one open item per conversation, whatever two clinic instances do at once
    sa.Index(
        "clinic_worklist_one_open",
        "sender_id",
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    ),
)

# Every notice sent to the care team about a worklist item: the first alert at each level and at
# most one escalation per level, per channel (the unique constraint: a re-index or a second
# clinic instance cannot send twice). Replaces `clinic_alerts` (one alert per conversation and
# level, ever), which a patient's second emergency weeks later could not raise.
ALERTS = sa.Table(
    "clinic_notices",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("item_id", sa.Integer, nullable=False, index=True),
    sa.Column("sender_id", sa.String(255), nullable=False),
    sa.Column("level", sa.String(16), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),  # alert | escalation
    sa.Column("channel", sa.String(24), nullable=False),  # webhook | telegram | escalation-webhook | escalation-telegram
    sa.Column("status", sa.String(16), nullable=False),  # pending | retrying | sent | cancelled (handled before delivery)
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.String(255), nullable=False, default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("next_try_at", sa.Float, nullable=False, index=True),
    sa.Column("sent_at", sa.Float),
    sa.UniqueConstraint("item_id", "level", "kind", "channel", name="clinic_notice_once"),
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

# Before the worklist, alerts lived here (one per conversation and level). Never created now;
# kept so that forgetting a conversation and retention also clear it in an older database.
_legacy = sa.MetaData()
OLD_ALERTS = sa.Table("clinic_alerts", _legacy, sa.Column("id", sa.Integer, primary_key=True), sa.Column("sender_id", sa.String(255)))


def rewind_events_mark(conn: sa.engine.Connection) -> None:
    """After deleting events, in the same transaction: SQLite gives a new row the id after the
    largest one left, so deleting the newest events makes their ids come again; the indexer's
    mark must not stay above them or the next patient messages (and their alerts) are skipped."""
    if not sa.inspect(conn).has_table(STATE.name):
        return
    top = sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.id), 0)).scalar_subquery()
    conn.execute(sa.update(STATE).where(STATE.c.key == "events_id", STATE.c.value > top).values(value=top))


def delete_clinic_rows(conn: sa.engine.Connection, sender_ids: list[str]) -> None:
    """Everything the clinic keeps about these conversations (their events are Rasa's)."""
    for table in (SUMMARIES, ALERTS, WORKLIST):
        conn.execute(sa.delete(table).where(table.c.sender_id.in_(sender_ids)))
    if sa.inspect(conn).has_table(OLD_ALERTS.name):
        conn.execute(sa.delete(OLD_ALERTS).where(OLD_ALERTS.c.sender_id.in_(sender_ids)))
    from bot.checkins.store import CHECKINS, NEURO_CHECKS  # what check-ins and neuro checks recorded

    for table in (NEURO_CHECKS, CHECKINS):
        if sa.inspect(conn).has_table(table.name):
            conn.execute(sa.delete(table).where(table.c.sender_id.in_(sender_ids)))


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
    """Our tables, and Rasa's `events` if Rasa has not started yet (same definition as Rasa's);
    columns added since a table was created are added to it (see `add_missing_columns`)."""
    metadata.create_all(engine)
    _rasa.create_all(engine)
    add_missing_columns(engine, metadata)
    for table in metadata.sorted_tables:  # indexes added since a table was created
        for index in table.indexes:
            index.create(engine, checkfirst=True)


def add_missing_columns(engine: sa.engine.Engine, meta: sa.MetaData) -> list[str]:
    """`ALTER TABLE … ADD COLUMN` for each column of `meta` a table in the database lacks.

    Our schema only ever grows by nullable columns or columns with a server default, which both
    SQLite and PostgreSQL add in place; a full migration tool (Alembic) would be one more thing
    to run by hand for that. Returns "table.column" for each column added."""
    added = []
    inspector = sa.inspect(engine)
    for table in meta.sorted_tables:
        if not inspector.has_table(table.name):
            continue
        present = {c["name"] for c in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            kind = column.type.compile(dialect=engine.dialect)
            default = ""
            if column.server_default is not None:
                default = " DEFAULT " + str(column.server_default.arg.compile(dialect=engine.dialect))
            null = "" if column.nullable or default else " NOT NULL"
            try:
                with engine.begin() as conn:
                    conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}{null}'))
            except sa.exc.DBAPIError:
                if column.name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise
                continue  # another instance starting at the same moment added it
            if column.index:
                with engine.begin() as conn:
                    conn.execute(sa.text(f'CREATE INDEX IF NOT EXISTS ix_{table.name}_{column.name} ON {table.name} ("{column.name}")'))
            added.append(f"{table.name}.{column.name}")
    return added

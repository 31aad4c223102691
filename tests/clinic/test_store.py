"""Clinic data on a real SQLite file: incremental summaries, retention, forgetting, accounts."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.checkins import neuro
from bot.checkins.scheduler import link_chat
from bot.checkins.store import CHATS, CHECKINS, NEURO_CHECKS, create_checkin_tables
from bot.clinic import accounts, indexer, labels, queries, retention, transcript
from bot.clinic.alerts import AlertConfig
from bot.clinic.forget import forget_clinic_rows
from bot.clinic.queries import Filters
from bot.clinic.schema import ALERTS, AUDIT, ENROLMENTS, EVENTS, OLD_ALERTS, RETENTION_RUNS, SUMMARIES, WORKLIST

DAY = 86400


def add_events(engine: sa.engine.Engine, sender: str, at: float, level: str, symptoms: list[str], text: str = "hi") -> None:
    rows = [
        ("user", {"event": "user", "text": text, "timestamp": at, "parse_data": {"entities": []}}),
        ("slot", {"event": "slot", "name": "symptoms", "value": symptoms, "timestamp": at + 1}),
        ("slot", {"event": "slot", "name": "triage_level", "value": level, "timestamp": at + 1}),
        ("bot", {"event": "bot", "text": "advice", "timestamp": at + 2}),
    ]
    with engine.begin() as conn:
        for type_name, data in rows:
            conn.execute(
                sa.insert(EVENTS).values(sender_id=sender, type_name=type_name, timestamp=data["timestamp"], data=json.dumps(data))
            )


def test_summaries_are_incremental_and_levels_only_rise(engine: sa.engine.Engine) -> None:
    now = time.time()
    add_events(engine, "a", now - 100, "urgent", ["fever"])
    assert indexer.refresh(engine) == [("a", "urgent")]
    add_events(engine, "a", now - 50, "emergency", ["fever", "confusion"])
    add_events(engine, "b", now - 10, "monitor", ["rash"])
    assert sorted(indexer.refresh(engine)) == [("a", "emergency"), ("b", "monitor")]
    add_events(engine, "a", now - 5, "urgent", ["fever", "confusion"])
    assert indexer.refresh(engine) == [], "a lower level is not a new level"
    rows, total = queries.list_conversations(engine, Filters())
    assert total == 2 and [r.sender_id for r in rows] == ["a", "b"]
    assert rows[0].level == "emergency" and rows[0].messages == 3 and rows[0].symptoms == ["fever", "confusion"]
    assert [r.sender_id for r in queries.list_conversations(engine, Filters(symptom="rash"))[0]] == ["b"]
    assert queries.list_conversations(engine, Filters(symptom="fev"))[1] == 0, "whole symptom ids only"


def test_retention_deletes_old_conversations_and_records_the_run(engine: sa.engine.Engine) -> None:
    now = time.time()
    add_events(engine, "old", now - 40 * DAY, "urgent", ["fever"])
    add_events(engine, "recent", now - 2 * DAY, "monitor", ["rash"])
    run = retention.apply_retention(engine, days=30, now=now)
    assert (run.conversations, run.events) == (1, 4)
    with engine.connect() as conn:
        senders = {r[0] for r in conn.execute(sa.select(EVENTS.c.sender_id))}
        summaries = {r[0] for r in conn.execute(sa.select(SUMMARIES.c.sender_id))}
        recorded = conn.execute(sa.select(RETENTION_RUNS)).mappings().all()
    assert senders == summaries == {"recent"}
    assert len(recorded) == 1 and recorded[0]["conversations"] == 1 and recorded[0]["cutoff"] == pytest.approx(now - 30 * DAY)


def _files_hold(tmp_path: Path, words: bytes) -> list[str]:
    """The database files (main, write-ahead log) whose raw bytes still contain `words`."""
    return [f.name for f in tmp_path.glob("clinic.db*") if words in f.read_bytes()]


def test_retention_leaves_no_copy_in_the_database_files(engine: sa.engine.Engine, tmp_path: Path) -> None:
    now = time.time()
    add_events(engine, "old", now - 40 * DAY, "urgent", ["fever"], text="zebra-old-words " * 700)  # overflow pages, freed on delete
    add_events(engine, "recent", now - 2 * DAY, "monitor", ["rash"], text="zebra-recent-words")
    assert _files_hold(tmp_path, b"zebra-old-words"), "the words are on disk before (the check can fail)"
    retention.apply_retention(engine, days=30, now=now)
    assert _files_hold(tmp_path, b"zebra-old-words") == [], "overwritten (secure_delete) and the log truncated"
    assert _files_hold(tmp_path, b"zebra-recent-words"), "what is kept is still there"
    assert oct((tmp_path / "clinic.db").stat().st_mode & 0o777) == oct(0o600), "readable by the service only"
    with engine.connect() as conn:  # explicit: Debian's SQLite defaults to it, other builds do not
        assert conn.exec_driver_sql("PRAGMA secure_delete").scalar_one() == 1


def test_forget_removes_clinic_rows_and_leaves_a_content_free_trace(engine: sa.engine.Engine) -> None:
    add_events(engine, "tg-x", time.time(), "urgent", ["fever"], text="my secret words")
    indexer.refresh(engine, AlertConfig(levels=("urgent",), webhook_url="http://127.0.0.1:9/").tracking)
    with engine.begin() as conn:  # an alert table from before the worklist, as an older database has it
        OLD_ALERTS.create(conn)
        conn.execute(sa.insert(OLD_ALERTS).values(sender_id="tg-x"))
    create_checkin_tables(engine)  # the chat's link, a check-in and a neuro check
    with engine.begin() as conn:
        conn.execute(sa.insert(ENROLMENTS).values(code="FGT1", label="Bed 8", therapy="", created_by="a", created_at=0))
    link_chat(engine, "FGT1", 31, "tg-x", now=1.0)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(CHECKINS).values(
                key="FGT1@x", code="FGT1", chat_id=31, sender_id="tg-x", due_at=1.0, day=0, missed_level="urgent", neuro=False,
                status="answered", owner="r", claimed_at=1.0,
            )
        )  # fmt: skip
    neuro.start(engine, neuro.load_neuro_config(), 31, "tg-x", 2.0)
    for table in (WORKLIST, ALERTS, OLD_ALERTS, CHATS, CHECKINS, NEURO_CHECKS):
        with engine.connect() as conn:
            assert conn.execute(sa.select(table).where(table.c.sender_id == "tg-x")).first() is not None, table.name
    forget_clinic_rows(engine, "tg-x")
    with engine.connect() as conn:
        for table in (SUMMARIES, WORKLIST, ALERTS, OLD_ALERTS, CHATS, CHECKINS, NEURO_CHECKS):
            assert conn.execute(sa.select(table).where(table.c.sender_id == "tg-x")).first() is None, table.name
        trace = conn.execute(sa.select(AUDIT).where(AUDIT.c.action == "forget")).mappings().one()
    assert trace["target"] == labels.pseudonym("tg-x") and "secret" not in json.dumps(dict(trace))


def test_accounts_hash_lock_out_and_unlock(engine: sa.engine.Engine) -> None:
    accounts.add_user(engine, "alice", "long enough password", "admin")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.text("password_hash FROM clinic_staff"))).scalar_one()
    assert stored.startswith("$argon2id$") and "long enough" not in stored
    with pytest.raises(accounts.AccountError):
        accounts.add_user(engine, "bob", "short", "viewer")
    with pytest.raises(accounts.AccountError):
        accounts.add_user(engine, "carol", "long enough password", "root")
    t = time.time()
    for _ in range(accounts.MAX_FAILURES - 1):
        assert accounts.authenticate(engine, "alice", "wrong", now=t) == (None, "invalid")
    assert accounts.authenticate(engine, "alice", "wrong", now=t) == (None, "locked")
    assert accounts.authenticate(engine, "alice", "long enough password", now=t + 60) == (None, "locked")
    staff, _ = accounts.authenticate(engine, "alice", "long enough password", now=t + accounts.LOCK_SECONDS + 1)
    assert staff is not None and staff.is_admin
    assert accounts.authenticate(engine, "nobody", "whatever") == (None, "invalid")


def test_the_transcript_shows_the_check_ins_sent_where_they_happened(engine: sa.engine.Engine) -> None:
    create_checkin_tables(engine)
    now = time.time()
    add_events(engine, "tg-c", now - 600, "emergency", ["confusion"], text="yeah")
    indexer.refresh(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(CHECKINS).values(
                key="C@1", code="C", chat_id=3, sender_id="tg-c", due_at=now - 700, day=4, missed_level="emergency", neuro=False,
                status="answered", owner="r", claimed_at=now - 700, sent_at=now - 699, reminded_at=None,
            )
        )  # fmt: skip
    conv = transcript.load_conversation(engine, "tg-c")
    assert conv is not None
    assert [(t.who, t.text.split(",")[0]) for t in conv.turns] == [("bot", "[check-in sent"), ("patient", "yeah"), ("bot", "advice")]

"""The tracker store's cache never serves a tracker the database no longer holds.

Two store instances on one SQLite file stand for two Rasa replicas sharing a database.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import ActionExecuted, BotUttered, SessionStarted, SlotSet, UserUttered
from rasa.shared.core.trackers import DialogueStateTracker

from bot import PROJECT_ROOT
from bot.rasa_plugins.tracker_store import ConfiguredSQLTrackerStore


@pytest.fixture(scope="module")
def domain() -> Domain:
    return Domain.load(str(Path(PROJECT_ROOT) / "domain.yml"))


@pytest.fixture
def stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, domain: Domain) -> tuple[ConfiguredSQLTrackerStore, ...]:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'tracker.db'}")
    a = ConfiguredSQLTrackerStore(domain)
    b = ConfiguredSQLTrackerStore(domain)
    plain = ConfiguredSQLTrackerStore(domain, cache_size=0)
    return a, b, plain


def turn(text: str) -> list:
    return [UserUttered(text, {"name": "report_symptoms"}), ActionExecuted("utter_ok"), BotUttered("ok"), ActionExecuted("action_listen")]


def stored_texts(tracker: DialogueStateTracker | None) -> list[str]:
    return [e.text for e in tracker.events if isinstance(e, UserUttered)] if tracker else []


async def new_conversation(store: ConfiguredSQLTrackerStore) -> DialogueStateTracker:
    tracker = await store.get_or_create_tracker(f"t-{uuid.uuid4().hex[:8]}")
    for event in turn("first"):
        tracker.update(event)
    await store.save(tracker)
    return tracker


async def test_saved_tracker_is_reused_and_equals_the_database(stores: tuple) -> None:
    a, _, plain = stores
    tracker = await new_conversation(a)
    again = await a.retrieve(tracker.sender_id)
    assert a._lent.get(tracker.sender_id) is again, "served from the cache"
    assert again is not tracker, "a copy: what a request changes and does not save never reaches the cache"
    from_db = await plain.retrieve(tracker.sender_id)
    assert [e.as_dict() for e in from_db.events] == [e.as_dict() for e in again.events]
    assert again.current_state() == from_db.current_state()
    for event in turn("second"):
        again.update(event)
    await a.save(again)
    assert stored_texts(await plain.retrieve(tracker.sender_id)) == ["first", "second"], "each event stored once"


async def test_cached_trackers_are_not_objects_the_garbage_collector_walks(stores: tuple) -> None:
    import gc

    a, _, _ = stores
    for _ in range(20):
        await new_conversation(a)
    referents = gc.get_referents(*a._cache.values())
    assert not any(isinstance(r, DialogueStateTracker | list | dict) for r in referents), {type(r).__name__ for r in referents}
    assert not any(gc.is_tracked(entry.blob) for entry in a._cache.values())


async def test_events_saved_by_another_replica_are_seen(stores: tuple) -> None:
    a, b, plain = stores
    tracker = await new_conversation(a)
    other = await b.retrieve(tracker.sender_id)
    for event in turn("second, via replica b"):
        other.update(event)
    await b.save(other)
    seen = await a.retrieve(tracker.sender_id)
    assert stored_texts(seen) == ["first", "second, via replica b"]
    for event in turn("third, back on a"):
        seen.update(event)
    await a.save(seen)
    assert stored_texts(await plain.retrieve(tracker.sender_id)) == ["first", "second, via replica b", "third, back on a"]
    assert len((await plain.retrieve(tracker.sender_id)).events) == len(seen.events), "each event stored once"


async def test_change_not_saved_is_not_served(stores: tuple) -> None:
    a, _, _ = stores
    tracker = await new_conversation(a)
    tracker.update(UserUttered("lost in a crash", {"name": "report_symptoms"}))  # never saved
    assert stored_texts(await a.retrieve(tracker.sender_id)) == ["first"]


async def test_deleted_elsewhere_is_gone(stores: tuple) -> None:
    a, b, _ = stores
    tracker = await new_conversation(a)
    assert await b.delete(tracker.sender_id) > 0
    assert await a.retrieve(tracker.sender_id) is None


async def test_only_the_latest_session_is_served_and_cached(stores: tuple) -> None:
    a, _, plain = stores
    tracker = await new_conversation(a)
    tracker.update(SlotSet("triage_level", "urgent"))
    tracker.update(SessionStarted())
    tracker.update(ActionExecuted("action_listen"))
    for event in turn("new session"):
        tracker.update(event)
    await a.save(tracker)
    current = await plain.retrieve(tracker.sender_id)
    assert stored_texts(current) == ["new session"]
    assert tracker.sender_id not in a._cache, "two sessions in memory: not what retrieve reads back"
    served = await a.retrieve(tracker.sender_id)
    assert [e.as_dict() for e in served.events] == [e.as_dict() for e in current.events]
    for event in turn("more"):
        served.update(event)
    await a.save(served)
    cached = await a.retrieve(tracker.sender_id)
    assert a._lent.get(tracker.sender_id) is cached, "the latest session alone is cached"
    assert stored_texts(cached) == ["new session", "more"]
    full = await a.retrieve_full_tracker(tracker.sender_id)
    assert stored_texts(full) == ["first", "new session", "more"]
    a._remember(full, (None, 0))  # a full-history tracker never becomes the cached session view
    assert tracker.sender_id not in a._cache


async def test_cache_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, domain: Domain) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'small.db'}")
    store = ConfiguredSQLTrackerStore(domain, cache_size=2)
    trackers = [await new_conversation(store) for _ in range(3)]
    assert len(store._cache) == 2
    assert await store.retrieve(trackers[0].sender_id) is not trackers[0], "evicted: read from the database"
    assert stored_texts(await store.retrieve(trackers[0].sender_id)) == ["first"]


async def test_a_database_error_reaches_the_caller_instead_of_an_empty_memory_store(
    stores: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    """Stock FailSafeTrackerStore would answer from an empty in-memory store: history lost, message unstored."""
    from rasa.core.tracker_store import FailSafeTrackerStore
    from sqlalchemy.exc import OperationalError

    store = stores[0]
    wrapped = FailSafeTrackerStore(store)
    tracker = await new_conversation(store)
    with store.engine.begin() as c:
        c.exec_driver_sql("ALTER TABLE events RENAME TO events_away")  # the table vanishes, as in a broken database
    try:
        store._cache.clear()
        with pytest.raises(OperationalError):
            await wrapped.retrieve(tracker.sender_id)
        tracker.update(UserUttered("I can't breathe"))
        with pytest.raises(OperationalError):
            await wrapped.save(tracker)
        assert "tracker store save failed" in caplog.text and "I can't breathe" not in caplog.text
    finally:
        with store.engine.begin() as c:
            c.exec_driver_sql("ALTER TABLE events_away RENAME TO events")
    assert stored_texts(await wrapped.retrieve(tracker.sender_id)) == ["first"], "nothing half-stored"


@pytest.mark.parametrize(
    "driver_message, hint",
    [
        ("(sqlite3.OperationalError) database or disk is full", "the disk holding the tracker database is full"),
        ("(sqlite3.OperationalError) attempt to write a readonly database", "the tracker database is read-only"),
        ("(sqlite3.OperationalError) database is locked", "stayed locked longer than the busy timeout"),
        ('(psycopg2.OperationalError) connection to server at "127.0.0.1" failed: Connection refused', "unreachable"),
        ("something else", "the tracker database failed"),
    ],
)
def test_store_errors_are_described_for_operators(driver_message: str, hint: str) -> None:
    from bot.rasa_plugins.tracker_store import describe_store_error

    text = describe_store_error(RuntimeError(driver_message + "\n[SQL: INSERT ...]\n[parameters: secret]"))
    assert hint in text and driver_message in text and "secret" not in text

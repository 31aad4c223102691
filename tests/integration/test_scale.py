"""Two Rasa replicas and two action servers on one PostgreSQL and one Redis (`make scale-test`'s
correctness half): messages of the same conversations sent alternately to both replicas are
stored once, in order, none lost. Skipped, with the reason, where either package is absent
(`.ci/run` installs both)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from bot.rasa_plugins.lock_store import AtomicRedisLockStore
from tools.redisserver import throwaway_redis
from tools.scale import Replicas, check_conversation, interleaved, missing_services, replicas

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    missing = missing_services()
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")
    with replicas(tmp_path_factory.mktemp("scale"), 2) as r:
        yield r


def test_interleaved_messages_stored_once_in_order(rig: Replicas) -> None:
    result = asyncio.run(interleaved(rig, conversations=8, per_conversation=6))
    assert result["messages"] == 8 * 6 * 2
    assert result["unanswered"] == 0
    assert result["problems"] == []
    assert result["events_stored"] > result["messages"] * 3  # each turn: message, actions, replies


def test_the_check_catches_what_a_missing_lock_would_do() -> None:
    ok = [("user", {"text": "a", "timestamp": 1}), ("action", {"name": "action_listen", "timestamp": 2}),
          ("user", {"text": "b", "timestamp": 3}), ("action", {"name": "action_listen", "timestamp": 4})]  # fmt: skip
    assert check_conversation(ok, ["a", "b"], ordered=True) == []
    interleaved_turns = [ok[0], ok[2], ok[1], ok[3]]
    assert any("inside another one's turn" in p for p in check_conversation(interleaved_turns, ["a", "b"], ordered=False))
    assert any("twice" in p for p in check_conversation([*ok, ok[3]], ["a", "b"], ordered=True))
    assert check_conversation(ok[:2], ["a", "b"], ordered=True), "a lost message is reported"
    assert check_conversation(list(reversed(ok)), ["a", "b"], ordered=True), "order is checked"


def test_redis_tickets_are_unique_across_replicas() -> None:
    if missing_services():
        pytest.skip("Redis or PostgreSQL not installed")
    with throwaway_redis() as url:
        stores = [AtomicRedisLockStore.from_url(url), AtomicRedisLockStore.from_url(url)]
        tickets: list[int] = []
        guard = threading.Lock()

        def take(store: AtomicRedisLockStore) -> None:
            for _ in range(200):
                t = store.issue_ticket("same-conversation", 60)
                with guard:
                    tickets.append(t)

        threads = [threading.Thread(target=take, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(tickets) == 400 and len(set(tickets)) == 400, "two replicas never get the same ticket"
        lock = stores[0].get_lock("same-conversation")
        stores[1].finish_serving("same-conversation", tickets[0])
        assert stores[0].get_lock("same-conversation") is not None, "returning one ticket keeps the lock for the rest"
        for t in tickets:
            stores[t % 2].cleanup("same-conversation", t)
        assert stores[0].get_lock("same-conversation") is None and lock is not None, "lock deleted when no one waits"


def test_a_second_message_waits_its_turn_not_a_second() -> None:
    from bot.rasa_plugins.lock_store import POLL_SECONDS, FastInMemoryLockStore

    store = FastInMemoryLockStore()

    async def two_messages() -> float:
        loop = asyncio.get_running_loop()
        done: list[float] = []

        async def handle(hold: float) -> None:
            async with store.lock("c"):
                await asyncio.sleep(hold)
                done.append(loop.time())

        start = loop.time()
        await asyncio.gather(handle(0.05), handle(0.0))
        return done[-1] - start

    assert asyncio.run(two_messages()) < 0.05 + 10 * POLL_SECONDS, "the second message waits ~its turn, not a second"

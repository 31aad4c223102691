"""Parked messages survive a restart of the relay and come back in order."""

from __future__ import annotations

from pathlib import Path

from bot.telegram.outbox import Outbox


async def test_park_order_restart_and_delivery(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path)
    await box.park(1, "tg-a", "tg-a:1", "first", {"telegram": {"update_id": 1}}, 10)
    await box.park(2, "tg-b", "tg-b:1", "other chat", {}, None)
    await box.park(1, "tg-a", "tg-a:2", "second", {}, 11)
    await box.park(1, "tg-a", "tg-a:1", "first", {}, 10)  # the same message parked again
    box.close()

    box = Outbox(path)  # the relay restarted
    assert box.has_pending(1) and box.has_pending(2) and not box.has_pending(3)
    assert await box.count() == 3
    assert await box.chats() == [1, 2]
    pending = await box.pending(1)
    assert [p.text for p in pending] == ["first", "second"]
    assert pending[0].metadata == {"telegram": {"update_id": 1}} and pending[0].reply_to == 10
    await box.failed_attempt(pending[0].id)
    assert (await box.pending(1))[0].attempts == 1
    await box.delivered(pending[0].id)
    assert [p.text for p in await box.pending(1)] == ["second"]
    assert await box.forget(1) == 1
    assert await box.pending(1) == [] and await box.count() == 1
    assert not box.has_pending(1) and box.has_pending(2)
    box.close()

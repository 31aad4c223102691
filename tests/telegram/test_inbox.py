"""The relay's inbox: an update is on disk before python-telegram-bot confirms it, and comes back
after a kill until its handlers have run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from telegram import Bot, Update

from bot.telegram.inbox import MAX_REPLAYS, DurableUpdateQueue, Inbox


def update(update_id: int, text: str) -> dict:
    chat = {"id": 5, "type": "private"}
    return {"update_id": update_id, "message": {"message_id": update_id, "date": 0, "chat": chat, "text": text}}


BOT = Bot("123:abc")


def test_an_update_is_on_disk_when_put_returns_and_gone_when_finished(tmp_path: Path) -> None:
    async def run() -> None:
        queue = DurableUpdateQueue(Inbox(tmp_path / "relay.db"))
        first = Update.de_json(update(1, "hello"), BOT)
        await queue.put(first)
        assert Inbox(tmp_path / "relay.db").count() == 1, "another connection (the next start) sees it"
        got = await queue.get()
        await queue.finished(got)
        assert Inbox(tmp_path / "relay.db").count() == 0

    asyncio.run(run())


def test_a_killed_run_replays_unfinished_updates_in_order(tmp_path: Path) -> None:
    async def first_run() -> None:
        queue = DurableUpdateQueue(Inbox(tmp_path / "relay.db"))
        for n, text in enumerate(["one", "two", "three"], start=1):
            await queue.put(Update.de_json(update(n, text), BOT))
        await queue.finished(await queue.get())  # "one" was handled; then the process died

    async def second_run() -> list[str]:
        queue = DurableUpdateQueue(Inbox(tmp_path / "relay.db"))
        assert await queue.replay(BOT) == 2
        texts = []
        while not queue.empty():
            got = await queue.get()
            texts.append(got.message.text)
            await queue.finished(got)
        return texts

    asyncio.run(first_run())
    assert asyncio.run(second_run()) == ["two", "three"]
    assert Inbox(tmp_path / "relay.db").count() == 0


def test_an_update_that_fails_every_start_is_set_aside(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "relay.db")
    inbox.add(update(1, "poison"))
    for _ in range(MAX_REPLAYS):
        assert len(inbox.unfinished()) == 1
    assert inbox.unfinished() == [] and inbox.count() == 0
    kept = inbox._db.execute("SELECT update_json FROM inbox_set_aside").fetchall()
    assert len(kept) == 1 and "poison" in kept[0][0], "kept for an operator, not deleted"


def test_a_full_or_broken_disk_does_not_stop_the_update(tmp_path: Path) -> None:
    async def run() -> str:
        inbox = Inbox(tmp_path / "relay.db")
        queue = DurableUpdateQueue(inbox)
        inbox.close()  # every write now fails, like a full disk
        await queue.put(Update.de_json(update(1, "my chest hurts"), BOT))
        got = await queue.get()
        await queue.finished(got)
        return got.message.text

    assert asyncio.run(run()) == "my chest hurts"


def test_the_instance_id_lasts_across_starts(tmp_path: Path) -> None:
    first = Inbox(tmp_path / "relay.db").instance_id()
    assert Inbox(tmp_path / "relay.db").instance_id() == first
    assert Inbox(tmp_path / "other.db").instance_id() != first

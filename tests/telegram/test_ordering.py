"""Per-chat locks keep arrival order inside a chat and let chats run in parallel."""

from __future__ import annotations

import asyncio
import random

from bot.telegram.ordering import ChatLocks


async def test_order_within_chat_parallel_across_chats() -> None:
    locks = ChatLocks()
    done: dict[int, list[int]] = {1: [], 2: []}
    running = 0
    most_running = 0

    async def work(chat: int, n: int) -> None:
        nonlocal running, most_running
        async with locks.hold(chat):
            running += 1
            most_running = max(most_running, running)
            await asyncio.sleep(random.uniform(0, 0.01))  # noqa: S311 - jitter, not crypto
            done[chat].append(n)
            running -= 1

    tasks = [asyncio.create_task(work(chat, n)) for n in range(30) for chat in (1, 2)]
    await asyncio.gather(*tasks)
    assert done[1] == list(range(30)) and done[2] == list(range(30))
    assert most_running == 2, "the two chats overlapped"
    assert len(locks) == 0, "idle chats hold no lock"

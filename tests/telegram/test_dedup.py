"""Message claims: the first claim of a message wins on a database every instance shares, a copy
of an answered message is dropped, and a copy of an unanswered one is answered, once."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot.telegram.dedup import KEEP_SECONDS, MessageClaims, RelayClaims, Verdict


def shared(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


def test_second_claim_of_a_message_is_refused_across_instances(tmp_path: Path) -> None:
    a, b = MessageClaims(shared(tmp_path)), MessageClaims(shared(tmp_path))
    assert a.claim(42, "chat-a:1001").verdict is Verdict.FIRST
    assert b.claim(42, "chat-a:1001").verdict is Verdict.PENDING, "another instance has it, not answered yet"
    a.answered(42, "chat-a:1001")
    assert b.claim(42, "chat-a:1001").verdict is Verdict.ANSWERED
    assert b.claim(43, "chat-a:1001").verdict is Verdict.FIRST, "claims are per bot"
    assert b.claim(42, "chat-b:1001").verdict is Verdict.FIRST, "the same message id in another chat is another message"


def test_update_ids_play_no_part(tmp_path: Path) -> None:
    """Telegram restarts update ids after a week without updates; new messages stay new."""
    claims = MessageClaims(shared(tmp_path))
    assert [claims.claim(1, f"chat:{message_id}").verdict for message_id in (5, 6, 7)] == [Verdict.FIRST] * 3


def test_an_unanswered_claim_is_taken_over_once(tmp_path: Path) -> None:
    a, b = MessageClaims(shared(tmp_path)), MessageClaims(shared(tmp_path))
    a.claim(1, "chat:9", now=1000.0)
    seen = b.claim(1, "chat:9")
    assert seen.verdict is Verdict.PENDING and seen.claimed_at == 1000.0
    assert b.take_over(1, "chat:9", seen.claimed_at) is True
    assert a.take_over(1, "chat:9", seen.claimed_at) is False, "a second copy does not take it over again"
    b.answered(1, "chat:9")
    assert a.take_over(1, "chat:9", b.claim(1, "chat:9").claimed_at) is False, "answered: nothing to take over"


def test_unreachable_database_lets_the_message_through() -> None:
    claims = MessageClaims("postgresql://crs@127.0.0.1:1/nowhere")  # nothing listens on port 1
    assert claims.claim(42, "c:1").verdict is Verdict.FIRST and claims.claim(42, "c:1").verdict is Verdict.FIRST
    assert claims.take_over(42, "c:1", 0.0) is True, "a duplicate beats a lost message"


def test_old_claims_are_pruned_by_age(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    claims.claim(42, "c:7")
    claims.answered(42, "c:7")
    assert claims.prune(now=time.time() + KEEP_SECONDS - 60) == 0
    assert claims.prune(now=time.time() + KEEP_SECONDS + 1) == 1
    assert claims.claim(42, "c:7").verdict is Verdict.FIRST, "forgotten after the keep period"


def test_pruning_runs_on_a_timer_without_traffic(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    claims.claim(42, "c:old", now=time.time() - KEEP_SECONDS - 5)

    async def run() -> None:
        task = asyncio.create_task(RelayClaims(claims, 42, takeover_after=1).prune_forever(interval=0.05))
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(run())
    assert claims.claim(42, "c:old").verdict is Verdict.FIRST


def test_a_copy_waits_for_the_original_then_drops(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    relay = RelayClaims(claims, 1, takeover_after=5, poll=0.02)
    claims.claim(1, "c:1")

    async def run() -> bool:
        claim = await relay.check("c:1")
        assert claim.verdict is Verdict.PENDING
        asyncio.get_running_loop().call_later(0.2, claims.answered, 1, "c:1")
        return await relay.wait_or_take_over("c:1", claim.claimed_at)

    t0 = time.monotonic()
    assert asyncio.run(run()) is False, "the original answered: the copy is dropped"
    assert time.monotonic() - t0 < 2


def test_a_copy_of_a_message_nobody_answered_takes_it_over(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    relay = RelayClaims(claims, 1, takeover_after=0.3, poll=0.02)
    claims.claim(1, "c:2")  # its relay was killed before answering

    async def run() -> bool:
        claim = await relay.check("c:2")
        return await relay.wait_or_take_over("c:2", claim.claimed_at)

    assert asyncio.run(run()) is True

"""Message claims: the first claim of a message wins on a database every instance shares; a copy
of a message that is safe is dropped; a copy of one whose holder died (even after the fail-safe)
takes it over, once; a live holder's heartbeat keeps its claim."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from bot.telegram.dedup import KEEP_SECONDS, MessageClaims, RelayClaims, Verdict


def shared(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'shared.db'}"


def test_second_claim_of_a_message_is_refused_across_instances(tmp_path: Path) -> None:
    a, b = MessageClaims(shared(tmp_path)), MessageClaims(shared(tmp_path))
    assert a.claim(42, "chat-a:1001", "A").verdict is Verdict.FIRST
    assert b.claim(42, "chat-a:1001", "B").verdict is Verdict.PENDING, "another instance holds it"
    a.mark(42, "chat-a:1001", "answered_at")
    pending = b.claim(42, "chat-a:1001", "B")
    assert pending.verdict is Verdict.PENDING and pending.answered, "a fail-safe alone does not make it safe"
    a.mark(42, "chat-a:1001", "done_at")
    assert b.claim(42, "chat-a:1001", "B").verdict is Verdict.DONE
    assert b.claim(43, "chat-a:1001", "B").verdict is Verdict.FIRST, "claims are per bot"
    assert b.claim(42, "chat-b:1001", "B").verdict is Verdict.FIRST, "the same message id in another chat is another message"


def test_update_ids_play_no_part(tmp_path: Path) -> None:
    """Telegram restarts update ids after a week without updates; new messages stay new."""
    claims = MessageClaims(shared(tmp_path))
    assert [claims.claim(1, f"chat:{message_id}", "A").verdict for message_id in (5, 6, 7)] == [Verdict.FIRST] * 3


def test_a_claim_is_taken_over_once_and_the_old_holder_loses_it(tmp_path: Path) -> None:
    a, b = MessageClaims(shared(tmp_path)), MessageClaims(shared(tmp_path))
    a.claim(1, "chat:9", "A", now=1000.0)
    seen = b.claim(1, "chat:9", "B")
    assert seen.verdict is Verdict.PENDING and seen.claimed_at == 1000.0
    assert b.take_over(1, "chat:9", seen.claimed_at, "B") is True
    assert a.take_over(1, "chat:9", seen.claimed_at, "C") is False, "a second copy does not take it over again"
    assert a.heartbeat(1, "chat:9", "A") is False, "the old holder's heartbeat no longer holds it"
    assert b.heartbeat(1, "chat:9", "B") is True
    b.mark(1, "chat:9", "done_at")
    assert b.heartbeat(1, "chat:9", "B") is False and b.take_over(1, "chat:9", b.state(1, "chat:9").claimed_at, "C") is False


def test_unreachable_database_lets_the_message_through() -> None:
    claims = MessageClaims("postgresql://crs@127.0.0.1:1/nowhere")  # nothing listens on port 1
    assert claims.claim(42, "c:1", "A").verdict is Verdict.FIRST and claims.claim(42, "c:1", "A").verdict is Verdict.FIRST


def test_old_claims_are_pruned_by_age(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    claims.claim(42, "c:7", "A")
    claims.mark(42, "c:7", "done_at")
    assert claims.prune(now=time.time() + KEEP_SECONDS - 60) == 0
    assert claims.prune(now=time.time() + KEEP_SECONDS + 1) == 1
    assert claims.claim(42, "c:7", "A").verdict is Verdict.FIRST, "forgotten after the keep period"


def test_pruning_runs_on_a_timer_without_traffic(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    claims.claim(42, "c:old", "A", now=time.time() - KEEP_SECONDS - 5)

    async def run() -> None:
        task = asyncio.create_task(RelayClaims(claims, 42).prune_forever(interval=0.05))
        await asyncio.sleep(0.3)
        task.cancel()

    asyncio.run(run())
    assert claims.claim(42, "c:old", "A").verdict is Verdict.FIRST


def test_a_copy_waits_while_the_holder_lives_then_drops(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    holder = RelayClaims(claims, 1, heartbeat=0.05)
    copy = RelayClaims(claims, 1, takeover_after=0.3, poll=0.02)

    async def run() -> object:
        assert (await holder.check("c:1")).verdict is Verdict.FIRST
        beating = asyncio.create_task(holder.keep_alive("c:1"))
        claim = await copy.check("c:1")
        assert claim.verdict is Verdict.PENDING
        asyncio.get_running_loop().call_later(1.0, claims.mark, 1, "c:1", "done_at")  # slow, but alive
        try:
            return await copy.wait_or_take_over("c:1", claim)
        finally:
            beating.cancel()

    t0 = time.monotonic()
    assert asyncio.run(run()) is None, "the holder finished it: the copy is dropped, never taken over"
    assert time.monotonic() - t0 >= 0.9


def test_a_copy_of_a_message_whose_holder_died_after_the_fail_safe_takes_it_over(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    claims.claim(1, "c:2", "dead")
    claims.mark(1, "c:2", "answered_at")  # the fail-safe went out, then the relay was killed
    copy = RelayClaims(claims, 1, takeover_after=0.3, poll=0.02)

    async def run() -> object:
        claim = await copy.check("c:2")
        assert claim.verdict is Verdict.PENDING
        return await copy.wait_or_take_over("c:2", claim)

    taken = asyncio.run(run())
    assert taken is not None and taken.answered, "taken over, and it knows the patient had the fail-safe"
    assert claims.heartbeat(1, "c:2", copy.owner) is True, "the copy holds it now"


def test_a_relay_takes_over_its_own_previous_runs_claims_at_once(tmp_path: Path) -> None:
    claims = MessageClaims(shared(tmp_path))
    claims.claim(1, "c:3", "relay-1", now=time.time() - 1)  # then the relay was killed and restarted
    restarted = RelayClaims(claims, 1, owner="relay-1", takeover_after=30)

    async def run() -> object:
        claim = await restarted.check("c:3")
        return await restarted.wait_or_take_over("c:3", claim)

    t0 = time.monotonic()
    assert asyncio.run(run()) is not None
    assert time.monotonic() - t0 < 2, "no heartbeat wait for a claim of its own previous run"

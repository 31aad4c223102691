"""Update dedup: the first claim of an update id wins, on a database every instance shares."""

from __future__ import annotations

import time
from pathlib import Path

from bot.telegram.dedup import KEEP_SECONDS, UpdateDeduplicator


def test_second_claim_of_an_update_is_refused_across_instances(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a, b = UpdateDeduplicator(url), UpdateDeduplicator(url)
    assert a.claim(42, 1001) is True
    assert b.claim(42, 1001) is False, "another instance already has it"
    assert b.claim(43, 1001) is True, "update ids are per bot"
    assert b.claim(42, 1002) is True


def test_unreachable_database_lets_the_update_through() -> None:
    dedup = UpdateDeduplicator("postgresql://crs@127.0.0.1:1/nowhere")  # nothing listens on port 1
    assert dedup.claim(42, 1) is True and dedup.claim(42, 1) is True, "a duplicate beats a lost message"


def test_old_claims_are_pruned(tmp_path: Path) -> None:
    dedup = UpdateDeduplicator(f"sqlite:///{tmp_path / 'p.db'}")
    assert dedup.claim(42, 7)
    assert dedup.prune(now=time.time() + KEEP_SECONDS + 1) == 1
    assert dedup.claim(42, 7), "forgotten after the keep period"

"""The short chaos run (`make chaos` runs 10 minutes): patients write for 2 minutes while every
kind of fault is injected once; nothing is lost, stored twice or reordered, every message is
answered, and every emergency gets 911."""

from __future__ import annotations

import pytest

from tools.benchmarks.chaos import FAULT_KINDS, format_result, run
from tools.pgcluster import pg_bin

pytestmark = pytest.mark.integration


@pytest.mark.skipif(pg_bin() is None, reason="PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
def test_two_minutes_of_chaos_lose_nothing() -> None:
    result = run(minutes=2, rate=10, faults=len(FAULT_KINDS), seed=7)
    figures = format_result(result)
    injected = {kind for kind, figures in result["per_kind"].items() if figures["injected"]}
    skipped = {f["kind"]: f["skipped"] for f in result["faults"] if f["skipped"]}
    assert injected | {k for k, why in skipped.items() if why.startswith("needs root")} == set(FAULT_KINDS), skipped
    assert result["messages"] == 1200, figures
    assert result["lost"] == 0 and result["duplicated"] == 0 and result["chats_out_of_order"] == 0, figures
    assert result["unanswered"] == 0, figures
    assert result["emergencies"] > 0 and result["emergencies_with_911"] == result["emergencies"], figures
    assert all(result["processes_alive"].values()), figures
    assert result["ok"], figures

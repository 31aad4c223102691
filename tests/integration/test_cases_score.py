"""Our own cases (data/cases/own.jsonl) and the public samples, scored through the live stack, and
answered the same by stock Rasa (CRS_RASA_PATCHES=none)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot import PROJECT_ROOT
from bot.servers import Stack, isolated_settings
from tools.evaluate import RestClient, evaluate, format_summary

pytestmark = pytest.mark.integration

CASE_FILES = [PROJECT_ROOT / "data" / "cases" / "own.jsonl", PROJECT_ROOT.parent / "shared" / "cases" / "dev.jsonl"]


@pytest.mark.parametrize("cases", [p for p in CASE_FILES if p.exists()], ids=lambda p: p.name)
def test_case_file_meets_targets(client: RestClient, cases: Path, tmp_path: Path) -> None:
    s = evaluate(client, cases, tmp_path / "results.jsonl")
    print(format_summary(s))  # noqa: T201 - shown with -rA / on failure
    assert s["cases"] >= (200 if cases.name == "own.jsonl" else 1)
    assert s["emergency_sensitivity"] == 1.0, s["triage_misses"]
    assert s["emergency_911_share"] == 1.0
    assert s["triage_accuracy"] >= 0.95, s["triage_misses"]
    assert s["symptom_f1"] >= 0.90


def test_stock_rasa_gives_the_same_answers_as_the_patched_one(
    client: RestClient, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second stack with CRS_RASA_PATCHES=none (stock Rasa 3.6.21) beside the session's patched
    one: on our own cases and the samples, the same triage, symptoms, denials and replies, message
    for message. The patches change speed and failure handling, never an answer."""
    monkeypatch.setenv("CRS_RASA_PATCHES", "none")  # inherited by this stack's servers only
    tmp = tmp_path_factory.mktemp("stock")
    (tmp / "db").mkdir()
    stock = Stack(isolated_settings(tmp / "db"), log_dir=tmp / "log")
    try:
        stock.start()
        stock_client = RestClient(stock.settings.rasa_url, str(stock.settings.rasa_api_token))
        for cases in [p for p in CASE_FILES if p.exists()]:
            evaluate(client, cases, tmp / f"patched-{cases.name}")
            evaluate(stock_client, cases, tmp / f"stock-{cases.name}")
            patched, unpatched = (answers(tmp / f"{kind}-{cases.name}") for kind in ("patched", "stock"))
            assert len(patched) > 50 and patched == unpatched, [(a["id"], a, b) for a, b in zip(patched, unpatched, strict=True) if a != b][
                :3
            ]
    finally:
        stock.stop()
    assert "rasa_patches.safety_off action_failsafe,log_privacy" in (tmp / "log" / "rasa.log").read_text(), "it ran unpatched"


def answers(results: Path) -> list[dict]:
    """Each case's result without its latency."""
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    return [{k: v for k, v in row.items() if k != "latency_ms"} for row in rows]

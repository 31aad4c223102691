"""Our own cases (data/cases/own.jsonl) and the public samples, scored through the live stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot import PROJECT_ROOT
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

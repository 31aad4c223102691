"""`make eval`: run case files through the live stack and score them (SPEC "Evaluation contract").

Every case is a fresh conversation (its own sender id) sent over the REST channel to the same
Rasa server, model, action server and rules a patient talks to; the final slots are read back
through the HTTP API. `expect` is used only for scoring.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bot import PROJECT_ROOT
from bot.clinical.knowledge import LEVEL_RANK as RANK

OWN_CASES = PROJECT_ROOT / "data" / "cases" / "own.jsonl"


def load_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                case = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{n}: not JSON: {exc}") from exc
            if not isinstance(case.get("messages"), list):
                raise ValueError(f"{path}:{n}: case without a messages list")
            cases.append(case)
    return cases


def patient_conversations(count: int, per_patient: int, cases: Path = OWN_CASES) -> list[list[str]]:
    """Workload for benchmarks: `count` patients, each `per_patient` messages taken in turn from the cases."""
    messages = [m for case in load_cases(cases) for m in case["messages"] if m.strip()]
    return [[messages[(p * per_patient + k) % len(messages)] for k in range(per_patient)] for p in range(count)]


@dataclass
class RestClient:
    """Talks to the Rasa server like a channel would."""

    base_url: str
    token: str
    timeout: float = 30.0
    test_traffic: bool = True  # False: a stand-in patient (integration tests of what the clinic shows)

    def __post_init__(self) -> None:
        self.http = requests.Session()

    def send(self, sender: str, text: str) -> list[dict[str, Any]]:
        # Tagged as test traffic (kept only because the token comes with it): the clinic hides
        # these conversations and never alerts on them, whichever server this is.
        r = self.http.post(
            f"{self.base_url}/webhooks/rest/webhook",
            json={"sender": sender, "message": text, **({"metadata": {"traffic": "test"}} if self.test_traffic else {})},
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=self.timeout,
        )
        r.raise_for_status()
        return r.json()

    def tracker(self, sender: str) -> dict[str, Any]:
        r = self.http.get(f"{self.base_url}/conversations/{sender}/tracker", params={"token": self.token}, timeout=self.timeout)
        r.raise_for_status()
        return r.json()


def run_case(client: RestClient, case: dict[str, Any]) -> dict[str, Any]:
    sender = f"eval-{case.get('id', 'case')}-{uuid.uuid4().hex[:10]}"
    replies: list[str] = []
    latency: list[float] = []
    for message in case["messages"]:
        t0 = time.perf_counter()
        answer = client.send(sender, message)
        latency.append(round((time.perf_counter() - t0) * 1000, 2))
        replies.extend(str(m["text"]) for m in answer if m.get("text"))
    slots = client.tracker(sender).get("slots", {})
    return {
        "id": case.get("id"),
        "triage": slots.get("triage_level") or "none",
        "symptoms": sorted(slots.get("symptoms") or []),
        "denied": sorted(slots.get("denied_symptoms") or []),
        "replies": replies,
        "latency_ms": latency,
    }


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (0.0 for no values): eval and every benchmark use this one."""
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def score(cases: Iterable[dict[str, Any]], results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The SPEC summary figures."""
    n = correct = under = over = emerg = emerg_hit = emerg_911 = raised = 0
    tp = fp = fn = 0
    latencies: list[float] = []
    misses: list[str] = []
    for case, res in zip(cases, results, strict=True):
        exp = case.get("expect") or {}
        want, got = exp.get("triage", "none"), res["triage"]
        n += 1
        correct += want == got
        under += RANK[got] < RANK[want]
        over += RANK[got] > RANK[want]
        if want != got:
            misses.append(f"{res['id']}: expected {want}, got {got}")
        raised += want != "emergency" and got == "emergency"
        if want == "emergency":
            emerg += 1
            emerg_hit += got == "emergency"
            emerg_911 += any("911" in r for r in res["replies"])
        exp_set = {("present", s) for s in exp.get("symptoms", [])} | {("denied", s) for s in exp.get("denied", [])}
        got_set = {("present", s) for s in res["symptoms"]} | {("denied", s) for s in res["denied"]}
        tp += len(exp_set & got_set)
        fp += len(got_set - exp_set)
        fn += len(exp_set - got_set)
        latencies.extend(res["latency_ms"])
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "cases": n,
        "triage_accuracy": correct / n if n else 0.0,
        "emergency_cases": emerg,
        "emergency_sensitivity": emerg_hit / emerg if emerg else 1.0,
        "emergency_911_share": emerg_911 / emerg if emerg else 1.0,
        "under_triage": under,
        "over_triage": over,
        "non_emergency_raised": raised,  # non-emergency cases answered with emergency
        "symptom_precision": precision,
        "symptom_recall": recall,
        "symptom_f1": f1,
        "latency_p50_ms": percentile(latencies, 0.5),
        "latency_p95_ms": percentile(latencies, 0.95),
        "messages": len(latencies),
        "triage_misses": misses,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"cases: {s['cases']}  messages: {s['messages']}",
        f"triage accuracy: {s['triage_accuracy']:.1%}  (under-triage {s['under_triage']}, over-triage {s['over_triage']})",
        f"emergency sensitivity: {s['emergency_sensitivity']:.1%} of {s['emergency_cases']}  "
        f"replies with 911: {s['emergency_911_share']:.1%}  "
        f"non-emergencies raised to emergency: {s['non_emergency_raised']} of {s['cases'] - s['emergency_cases']}",
        f"symptoms: precision {s['symptom_precision']:.3f}  recall {s['symptom_recall']:.3f}  F1 {s['symptom_f1']:.3f}",
        f"latency per message: p50 {s['latency_p50_ms']:.1f} ms  p95 {s['latency_p95_ms']:.1f} ms",
    ]
    return "\n".join(lines)


def evaluate(client: RestClient, cases_path: Path, out_path: Path) -> dict[str, Any]:
    cases = load_cases(cases_path)
    results = [run_case(client, c) for c in cases]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("w", encoding="utf-8") as fh:
        for r in results:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return score(cases, results)

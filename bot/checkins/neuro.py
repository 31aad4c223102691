"""The caregiver neuro check (`/neurocheck`): questions and scoring from data/neurocheck.yml.

A caregiver asks the patient each question and taps whether the answer was right; each tap is one
conditional UPDATE of the check's row, so a double tap or a tap on an old question changes
nothing. The first complete check of a chat is its baseline. An answer not right on an item that
was right in an earlier check stops the check at once: that item's symptom (`confusion` or
`speech_difficulty`) is reported to the triage like any other message (`findings()`), so the
caregiver gets 911 advice and the clinic an emergency whose reason names the item. Stopping
there is deliberate: a check is not finished while someone should be calling for help.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.engine import Engine

from bot import PROJECT_ROOT
from bot.checkins.store import CHATS, NEURO_CHECKS
from bot.clinic import worklist

DEFAULT_PATH = PROJECT_ROOT / "data" / "neurocheck.yml"
CONFIG_ENV = "CRS_NEUROCHECK"
PREFIX = "neuro:"  # callback data: neuro:<check id>:<item index>:<p|f|s>, or neuro:start
START = PREFIX + "start"
PASS, FAIL, STOP = "p", "f", "s"
TEXT_KEYS = (
    "intro", "question", "button_pass", "button_fail", "button_stop",
    "baseline_full", "baseline_not_full", "same", "better", "worse", "stopped", "expired",
    "button_start", "unavailable",
)  # fmt: skip


@dataclass(frozen=True)
class Item:
    id: str
    name: str  # what the reason and the clinic call it ("the year")
    symptom: str  # data/clinical.yml id a newly failed answer reports
    ask: str


@dataclass(frozen=True)
class NeuroConfig:
    items: tuple[Item, ...]
    baseline_not_full_level: str
    abandon_after_s: float
    texts: dict[str, str]

    def item(self, item_id: str) -> Item | None:
        return next((i for i in self.items if i.id == item_id), None)


@lru_cache(maxsize=4)
def load_neuro_config(path: str | None = None) -> NeuroConfig:
    """Read and check data/neurocheck.yml (or `CRS_NEUROCHECK`): a broken file fails at start-up, not mid-check."""
    from bot.clinical.knowledge import load_knowledge_base

    source = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_PATH)
    raw = yaml.safe_load(source.read_text(encoding="utf-8")) or {}
    symptoms = load_knowledge_base().symptoms
    items = []
    for entry in raw.get("items") or []:
        item = Item(str(entry["id"]), str(entry["name"]), str(entry["symptom"]), str(entry["ask"]))
        if item.symptom not in symptoms:
            raise ValueError(f"{source}: item {item.id}: unknown symptom {item.symptom!r}")
        items.append(item)
    ids = [i.id for i in items]
    if not items or len(set(ids)) != len(ids) or any(":" in i or "," in i for i in ids):
        raise ValueError(f"{source}: items need unique ids without ':' or ','")
    level = str(raw.get("baseline_not_full_level", "urgent"))
    if level not in ("monitor", "urgent", "emergency"):
        raise ValueError(f"{source}: baseline_not_full_level must be monitor, urgent or emergency")
    texts = {k: str(v).strip() for k, v in (raw.get("texts") or {}).items()}
    missing = [k for k in TEXT_KEYS if k not in texts]
    if missing:
        raise ValueError(f"{source}: texts: missing {', '.join(missing)}")
    return NeuroConfig(tuple(items), level, float(raw.get("abandon_after_min", 30)) * 60, texts)


@dataclass(frozen=True)
class Step:
    """What the caregiver gets after a tap (or /neurocheck)."""

    kind: str  # question | complete | escalated | stopped | expired
    check_id: str = ""
    index: int = 0  # the question to ask (kind "question")
    score: int = 0
    baseline_score: int | None = None  # None: this check is the baseline
    failed: tuple[str, ...] = ()  # item ids not right in this check
    newly_failed: str | None = None  # the item, right before, that was not right now (kind "escalated")
    item_id: str = ""  # the item to ask (kind "question"): the check's own list, whatever the file says now


def start(engine: Engine, config: NeuroConfig, chat_id: int, sender_id: str, now: float) -> Step:
    """A new check; any check of this chat still open is abandoned (one at a time)."""
    check_id = secrets.token_hex(6)
    with engine.begin() as conn:
        conn.execute(
            sa.update(NEURO_CHECKS)
            .where(NEURO_CHECKS.c.chat_id == chat_id, NEURO_CHECKS.c.status == "open")
            .values(status="abandoned", finished_at=now)
        )
        code = conn.execute(sa.select(CHATS.c.code).where(CHATS.c.chat_id == chat_id).order_by(CHATS.c.linked_at.desc())).scalar()
        conn.execute(
            sa.insert(NEURO_CHECKS).values(
                id=check_id, sender_id=sender_id, chat_id=chat_id, code=code, started_at=now, status="open",
                answers="", item_ids=",".join(i.id for i in config.items),
            )
        )  # fmt: skip
    return Step("question", check_id, 0, item_id=config.items[0].id)


def parse(data: str) -> tuple[str, int, str] | None:
    """`neuro:<id>:<index>:<p|f|s>` → (id, index, verdict); None for anything else."""
    parts = data.split(":")
    if len(parts) != 4 or parts[0] + ":" != PREFIX or parts[3] not in (PASS, FAIL, STOP) or not parts[2].isdigit():
        return None
    return parts[1], int(parts[2]), parts[3]


def answer(
    engine: Engine, config: NeuroConfig, tracking: worklist.Tracking, check_id: str, index: int, verdict: str, now: float
) -> Step | None:
    """Record one tap. The same tap again (a relay replaying it after a crash, a retry after a slow
    database) gets the same step again, so an escalation is never lost between saving and
    reporting it (the report's message id makes Rasa take it once). None: a tap of an earlier
    question, or one another replica is recording (nothing to say)."""
    with engine.begin() as conn:
        row = conn.execute(sa.select(NEURO_CHECKS).where(NEURO_CHECKS.c.id == check_id)).mappings().first()
        if row is None:
            return Step("expired", check_id)
        if verdict in (PASS, FAIL) and len(row["answers"]) == index + 1 and row["answers"][index] == verdict:
            return _step(conn, row) if row["status"] in ("open", "complete", "escalated") else None
        if row["status"] != "open":
            return Step("expired", check_id) if row["status"] == "abandoned" else None
        if len(row["answers"]) != index:
            return None  # a double tap, or a button of an earlier question
        if verdict == STOP:
            _finish(conn, row, "stopped", now)
            return Step("stopped", check_id)
        item_ids = row["item_ids"].split(",")
        passed_before = _passed_before(conn, row["sender_id"], row["started_at"])
        worse = verdict == FAIL and item_ids[index] in passed_before
        if now - (row["last_at"] or row["started_at"]) > config.abandon_after_s and not worse:
            _finish(conn, row, "abandoned", now)  # left too long; a worse answer still counts, however late
            return Step("expired", check_id)
        answers = row["answers"] + verdict
        baseline = _baseline(conn, row["sender_id"], row["started_at"])
        status = "escalated" if worse else "complete" if len(answers) == len(item_ids) else "open"
        done = status != "open"
        moved = conn.execute(
            sa.update(NEURO_CHECKS)
            .where(NEURO_CHECKS.c.id == check_id, NEURO_CHECKS.c.status == "open", NEURO_CHECKS.c.answers == row["answers"])
            .values(
                answers=answers, status=status, last_at=now, finished_at=now if done else None,
                score=answers.count(PASS) if done else None, baseline=status == "complete" and baseline is None,
                baseline_score=baseline["score"] if done and baseline is not None else None,
            )
        ).rowcount  # fmt: skip
        if not moved:
            return None  # the same tap, handled by another replica a moment ago
        row = conn.execute(sa.select(NEURO_CHECKS).where(NEURO_CHECKS.c.id == check_id)).mappings().one()
        step = _step(conn, row)
        if step.kind == "complete" and step.baseline_score is None and step.failed:
            names = ", ".join(not_right(config, row))
            reason = (
                f"caregiver neuro check, first one (baseline): {step.score}/{len(item_ids)}, not right: {names}"
                f" → baseline_not_full → {config.baseline_not_full_level} (neuro check)"
            )
            worklist.open_item(conn, tracking, row["sender_id"], config.baseline_not_full_level, now, reason)
    return step


def _step(conn: sa.engine.Connection, row: Any) -> Step:
    """The step a check's row stands at (after its last answer)."""
    item_ids, answers = row["item_ids"].split(","), row["answers"]
    failed = tuple(i for i, a in zip(item_ids, answers, strict=False) if a == FAIL)
    if row["status"] == "open":
        return Step("question", row["id"], len(answers), item_id=item_ids[len(answers)])
    baseline = row["baseline_score"]
    kind = str(row["status"])
    last = item_ids[len(answers) - 1] if answers else None
    return Step(kind, row["id"], len(answers), answers.count(PASS), baseline, failed, newly_failed=last if kind == "escalated" else None)


def not_right(config: NeuroConfig, row: Any) -> list[str]:
    """The names of the items a check's answers were not right on (the clinic's words for them)."""
    names = {i.id: i.name for i in config.items}
    return [names.get(i, i) for i, a in zip(row["item_ids"].split(","), row["answers"], strict=False) if a == FAIL]


def _finish(conn: sa.engine.Connection, row: Any, status: str, now: float) -> None:
    still_open = sa.and_(NEURO_CHECKS.c.id == row["id"], NEURO_CHECKS.c.status == "open")
    conn.execute(sa.update(NEURO_CHECKS).where(still_open).values(status=status, finished_at=now))


def _baseline(conn: sa.engine.Connection, sender_id: str, before: float) -> Any:
    return (
        conn.execute(
            sa.select(NEURO_CHECKS)
            .where(NEURO_CHECKS.c.sender_id == sender_id, NEURO_CHECKS.c.baseline.is_(sa.true()), NEURO_CHECKS.c.started_at < before)
            .order_by(NEURO_CHECKS.c.started_at)
        )
        .mappings()
        .first()
    )


def _passed_before(conn: sa.engine.Connection, sender_id: str, before: float) -> set[str]:
    """Items answered right in an earlier check that counted (complete or escalated; not stopped or abandoned)."""
    passed: set[str] = set()
    rows = conn.execute(
        sa.select(NEURO_CHECKS.c.item_ids, NEURO_CHECKS.c.answers).where(
            NEURO_CHECKS.c.sender_id == sender_id,
            NEURO_CHECKS.c.status.in_(("complete", "escalated")),
            NEURO_CHECKS.c.started_at < before,
        )
    )
    for item_ids, answers in rows:
        passed.update(i for i, a in zip(item_ids.split(","), answers, strict=False) if a == PASS)
    return passed


def findings(config: NeuroConfig, step: Step) -> dict[str, Any]:
    """What the relay hands the triage for an escalated check (message metadata `neuro_check`)."""
    item = config.item(step.newly_failed or "")
    name = item.name if item else str(step.newly_failed)
    return {
        "check": step.check_id,
        "findings": [
            {
                "symptom": item.symptom if item else "confusion",
                "item": step.newly_failed,
                "evidence": f"caregiver neuro check: {name} not right, right in an earlier check",
            }
        ],
    }


def checks_of(engine: Engine, sender_id: str) -> list[dict[str, Any]]:
    """Every check of one patient, oldest first (the clinic's patient page)."""
    with engine.connect() as conn:
        rows = conn.execute(sa.select(NEURO_CHECKS).where(NEURO_CHECKS.c.sender_id == sender_id).order_by(NEURO_CHECKS.c.started_at))
        return [dict(r) for r in rows.mappings()]


def reported_entities(metadata: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Symptoms a structured report carries in the message's metadata: the relay's escalated
    caregiver neuro check (bot/checkins/neuro.py), one present symptom per item, the item as
    evidence. Unknown symptoms are dropped by `MessageFindings.from_entities`; a forged report
    can only raise a level, as typing the same words could."""
    check = ((metadata or {}).get("telegram") or {}).get("neuro_check") or {}
    found = check.get("findings") if isinstance(check, Mapping) else None
    return [
        {"entity": "symptom", "value": str(f.get("symptom")), "role": "present", "evidence": str(f.get("evidence") or "")[:200]}
        for f in (found if isinstance(found, list) else [])
        if isinstance(f, Mapping)
    ]

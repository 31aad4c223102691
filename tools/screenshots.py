"""`python -m tools.screenshots`: the docs' pictures of the worklist, a patient's chart and check-ins.

A throw-away clinic app on a SQLite file filled with invented conversations (Rasa-format events,
as tools/benchmarks/clinic.py makes them), photographed by Debian's chromium through Playwright,
so the pictures show the running code and can be made again after a change. Writes
docs/img/worklist.png, docs/img/patient-chart.png and docs/img/patient-checkins.png.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from bot import PROJECT_ROOT
from bot.clinic import worklist
from bot.clinic.indexer import refresh
from bot.clinic.schema import ENROLMENTS, EVENTS, create_tables
from bot.clinical.knowledge import LEVEL_RANK as RANK
from bot.db import create_db_engine
from bot.servers import Stack, child_env, isolated_settings

OUT = PROJECT_ROOT / "docs" / "img"
USER, PASSWORD = "nurse.kim", "screenshot password"
DAY = 86400


def _events(engine: sa.engine.Engine, sender: str, turns: list[tuple[float, str, list[dict], dict[str, Any]]], code: str = "") -> None:
    """(time, patient text, vital entities, slots set after it) per patient message."""
    rows = []
    for at, text, vitals, slots in turns:
        metadata = {"telegram": {"enrolment_code": code}} if code else {}
        rows.append(("user", {"event": "user", "timestamp": at, "text": text, "metadata": metadata, "parse_data": {"entities": vitals}}))
        rows += [("slot", {"event": "slot", "timestamp": at + 1, "name": k, "value": v}) for k, v in slots.items()]
        rows.append(("bot", {"event": "bot", "timestamp": at + 2, "text": "(advice)"}))
    with engine.begin() as conn:
        for kind, data in rows:
            conn.execute(sa.insert(EVENTS).values(sender_id=sender, type_name=kind, timestamp=data["timestamp"], data=json.dumps(data)))


def _temp(c: float, unit: str = "C") -> dict:
    value = round(c * 9 / 5 + 32, 1) if unit == "F" else c
    return {
        "entity": "vital",
        "kind": "temperature",
        "value": value,
        "unit": unit,
        "value_c": c,
        "role": "measured",
        "text": f"{value}{unit}",
    }


def _pulse(n: int) -> dict:
    return {"entity": "vital", "kind": "pulse", "value": float(n), "unit": "/min", "role": "measured", "text": f"pulse {n}"}


def fill(engine: sa.engine.Engine, now: float) -> str:
    """Invented patients: one CAR-T patient's first week of readings, and items in every state."""
    create_tables(engine)
    infusion = now - 6.4 * DAY
    code = "K7MX2QPA9"
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code=code, label="Bed 12 — M. Alvarez", therapy="tisagenlecleucel", created_by="admin", created_at=infusion,
                infusion_date=time.strftime("%Y-%m-%d", time.gmtime(infusion)),
            )
        )  # fmt: skip
    readings = [(0.3, 36.8, 78), (0.8, 37.0, 82), (1.3, 37.4, 88), (1.8, 37.9, 96), (2.3, 38.4, 104), (2.8, 38.9, 112),
                (3.3, 39.6, 126), (3.8, 39.1, 118), (4.3, 38.3, 102), (4.8, 37.6, 92), (5.3, 37.2, 86), (5.8, 36.9, 80)]  # fmt: skip
    turns = []
    reasons: list[str] = []
    reached = "none"
    for day, c, p in readings:
        unit = "F" if day in (2.8, 3.3) else "C"
        level = "emergency" if c >= 39.4 else "urgent" if c >= 38 else None
        slots: dict[str, Any] = {}
        if level == "emergency":
            reasons.append(f"temperature {c:g} °C ≥ 39.4 °C → high_fever → emergency (emergency symptom)")
        elif level:
            reasons.append(f"temperature {c:g} °C ≥ 38 °C → fever → urgent (mild symptom, on immunotherapy)")
        if level and RANK[level] > RANK[reached]:  # Rasa stores a slot only when it changes; levels only rise
            slots["triage_level"] = reached = level
        if level:
            slots["triage_reasons"] = list(reasons)
        turns.append((infusion + day * DAY, f"temp {_temp(c, unit)['text']}, pulse {p}", [_temp(c, unit), _pulse(p)], slots))
    tracking = worklist.Tracking(levels=("emergency", "urgent"))
    for turn in turns:  # as it happened: a nurse called back within 20 minutes of each item
        _events(engine, "tg-alvarez", [turn], code)
        refresh(engine, tracking)
        for item in worklist.items(engine, "open")[0]:
            outcome, note = (
                ("sent_to_ed", "Admitted, tocilizumab given")
                if item.level == "emergency"
                else ("called_back", "Paracetamol, recheck in 2 h")
            )
            worklist.close(engine, item.id, "nurse.lee", outcome, note, now=item.opened_at + 1200)
    others = [
        ("tg-a", 0.25, "emergency", "my husband is confused, doesn't know what year it is → confusion → emergency (emergency symptom)"),
        ("tg-b", 0.9, "emergency", "lips look blue → skin_discoloration → emergency (emergency symptom)"),
        ("tg-c", 1.6, "urgent", "38.3 °C → fever → urgent (mild symptom, on immunotherapy)"),
        ("tg-d", 5.0, "emergency", "can't catch my breath → difficulty_breathing → emergency (emergency symptom)"),
    ]
    for sender, hours_ago, level, reason in others:
        _events(engine, sender, [(now - hours_ago * 3600, "…", [], {"triage_level": level, "triage_reasons": [reason]})])
    refresh(engine, tracking)
    items = {i.sender_id: i for i in worklist.items(engine, "all")[0]}
    worklist.acknowledge(engine, items["tg-b"].id, USER, now=now - 0.8 * 3600)
    worklist.close(engine, items["tg-d"].id, "nurse.lee", "sent_to_ed", "Called back, ambulance called, seen in ED", now=now - 4.6 * 3600)
    _checkins(engine, code, infusion, now)
    return code


def _checkins(engine: sa.engine.Engine, code: str, infusion: float, now: float) -> None:
    """The same patient's check-ins (data/checkins.yml) and a caregiver's neuro checks: one missed
    check-in, the last one waiting; evening neuro checks, the fourth below the baseline."""
    from datetime import date
    from zoneinfo import ZoneInfo

    from bot.checkins import neuro
    from bot.checkins.schedule import due_for, load_checkin_config
    from bot.checkins.scheduler import link_chat
    from bot.checkins.store import CHECKINS, create_checkin_tables

    create_checkin_tables(engine)
    link_chat(engine, code, 4711, "tg-alvarez", now=infusion)
    first = date.fromisoformat(time.strftime("%Y-%m-%d", time.gmtime(infusion)))
    due = due_for(load_checkin_config(), code, "car_t", [first], ZoneInfo("UTC"), infusion, now)
    with engine.begin() as conn:
        for n, d in enumerate(due):
            status = "sent" if n == len(due) - 1 else "missed" if n == 8 else "answered"
            conn.execute(
                sa.insert(CHECKINS).values(
                    key=d.key, code=code, chat_id=4711, sender_id="tg-alvarez", due_at=d.at, day=d.day, missed_level=d.missed_level,
                    neuro=d.neuro, status=status, owner="relay", claimed_at=d.at, sent_at=d.at + 2,
                    reminded_at=d.at + 3600 if status == "missed" else None, answered_at=d.at + 600 if status == "answered" else None,
                    missed_at=d.at + 7200 if status == "missed" else None,
                )
            )  # fmt: skip
    config, tracking = neuro.load_neuro_config(), worklist.Tracking(levels=())
    evenings = [d.at + 900 for d in due if d.neuro]
    for at, answers in zip(evenings, ("p" * 10, "p" * 10, "p" * 10, "pf"), strict=False):
        step = neuro.start(engine, config, 4711, "tg-alvarez", at)
        for index, verdict in enumerate(answers):
            neuro.answer(engine, config, tracking, step.check_id, index, verdict, at + 20 * (index + 1))


def main() -> list[Path]:
    from playwright.sync_api import sync_playwright

    from tests.integration.test_clinic_web import CHROMIUM, CHROMIUM_ARGS

    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="crs-screens-") as tmp:
        # an escalation address nobody listens on: the page says where escalations go; none is delivered
        settings = isolated_settings(
            Path(tmp), clinic_alert_levels=("emergency", "urgent"), clinic_escalation_webhook_url="http://127.0.0.1:9/on-call"
        )
        engine = create_db_engine(settings.database_url)
        code = fill(engine, time.time())
        subprocess.run(
            [sys.executable, "-m", "bot", "users", "add", USER, "--role", "admin", "--password-stdin"],
            input=PASSWORD + "\n", text=True, check=True, env=child_env(settings), capture_output=True,
        )  # fmt: skip
        stack = Stack(settings, log_dir=Path(tmp))
        stack.start_clinic()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                page.goto(f"{settings.clinic_url}/login")
                page.fill("input[name=username]", USER)
                page.fill("input[name=password]", PASSWORD)
                with page.expect_navigation():
                    page.click("button[type=submit]")
                shots = []
                for path, name in (("/worklist?status=all", "worklist.png"), (f"/patients/{code}", "patient-chart.png")):
                    page.goto(settings.clinic_url + path)
                    page.screenshot(path=str(OUT / name), full_page=True)
                    shots.append(OUT / name)
                # the check-ins part of the same page: its state, the schedule ahead, what was sent, the neuro checks
                top, bottom = page.locator("h2", has_text="Check-ins").bounding_box(), page.locator("#neuro-checks").bounding_box()
                if top and bottom:
                    clip = {"x": 0, "y": top["y"] - 12, "width": 1280, "height": bottom["y"] + bottom["height"] - top["y"] + 24}
                    page.screenshot(path=str(OUT / "patient-checkins.png"), full_page=True, clip=clip)  # type: ignore[arg-type]
                    shots.append(OUT / "patient-checkins.png")
                browser.close()
        finally:
            stack.stop()
    return shots


if __name__ == "__main__":
    for shot in main():
        sys.stdout.write(f"{shot}\n")

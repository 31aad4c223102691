"""What the clinic sees of check-ins, and how it pauses them (the app in-process, a real SQLite file)."""

from __future__ import annotations

import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from starlette.testclient import TestClient

from bot.checkins import neuro
from bot.checkins.schedule import load_checkin_config
from bot.checkins.scheduler import link_chat
from bot.checkins.store import CHECKINS, create_checkin_tables
from bot.clinic import accounts, alerts
from bot.clinic.app import create_app
from bot.clinic.schema import AUDIT, ENROLMENTS
from bot.db import create_db_engine

PASSWORD = "correct horse battery"


def test_the_patient_page_lists_check_ins_and_an_admin_pauses_them(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    create_checkin_tables(engine)
    accounts.add_user(engine, "boss", PASSWORD, "admin")
    now = time.time()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code="K7MX2QPA9", label="Bed 12", therapy="tisagenlecleucel", infusion_date="2026-12-01", created_by="boss", created_at=now
            )
        )  # fmt: skip
        for key, status in (("K7MX2QPA9@2026-12-02T08:00", "answered"), ("K7MX2QPA9@2026-12-02T20:00", "missed")):
            conn.execute(
                sa.insert(CHECKINS).values(
                    key=key, code="K7MX2QPA9", chat_id=1, sender_id="tg-1", due_at=now - 3600, day=1, missed_level="emergency",
                    neuro=False, status=status, owner="r", claimed_at=now - 3600, sent_at=now - 3600,
                )
            )  # fmt: skip
    client = TestClient(create_app(engine, "k"), follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"csrf": csrf, "username": "boss", "password": PASSWORD, "next": "/"})
    patient = client.get("/patients/K7MX2QPA9").text
    statuses = re.findall(r'<td class="status">([^<]+)</td>', patient)
    assert sorted(statuses) == ["answered", "missed"]
    page = client.get("/admin/enrolments").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    assert client.post("/admin/enrolments", data={"csrf": csrf, "code": "K7MX2QPA9", "checkins": "paused"}).status_code == 200
    with engine.connect() as conn:
        assert conn.execute(sa.select(ENROLMENTS.c.checkins)).scalar_one() == "paused"
        assert conn.execute(sa.select(AUDIT.c.detail).where(AUDIT.c.action == "set-checkins")).scalar_one() == "state=paused"
    refused = client.post("/admin/enrolments", data={"csrf": csrf, "code": "K7MX2QPA9", "checkins": "whenever"})
    assert refused.status_code == 400


def _admin(engine: sa.engine.Engine) -> TestClient:
    accounts.add_user(engine, "boss", PASSWORD, "admin")
    client = TestClient(create_app(engine, "k", timezone="America/New_York"), follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text).group(1)  # type: ignore[union-attr]
    client.post("/login", data={"csrf": csrf, "username": "boss", "password": PASSWORD, "next": "/"})
    return client


def test_a_bispecific_enrolment_with_step_up_doses_and_its_own_zone_shows_its_schedule(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    create_checkin_tables(engine)
    client = _admin(engine)
    today = date.today()
    doses = [today + timedelta(days=2), today + timedelta(days=4)]
    page = client.get("/admin/enrolments").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    form = {"csrf": csrf, "label": "Bed 4", "therapy": "teclistamab", "infusion_date": today.isoformat(), "timezone": "America/Denver"}
    created = client.post("/admin/enrolments", data={**form, "dose_dates": f"{doses[1]}, {doses[0]}"})
    assert created.status_code == 200
    assert client.post("/admin/enrolments", data={**form, "timezone": "Mars/Olympus"}).status_code == 400
    assert client.post("/admin/enrolments", data={**form, "dose_dates": "next friday"}).status_code == 400
    assert client.post("/admin/enrolments", data={**form, "dose_dates": today.isoformat()}).status_code == 400, "after the infusion"
    code = re.search(r'<strong class="code">([^<]+)</strong>', created.text).group(1)  # type: ignore[union-attr]
    with engine.connect() as conn:
        row = conn.execute(sa.select(ENROLMENTS).where(ENROLMENTS.c.code == code)).mappings().one()
    assert row["timezone"] == "America/Denver" and row["dose_dates"] == ",".join(d.isoformat() for d in doses)
    patient = client.get(f"/patients/{code}").text
    assert "patient links the chat" in patient and "times in America/Denver" in patient
    schedule = re.search(r'<table class="list" id="schedule">(.*?)</table>', patient, re.S).group(1)  # type: ignore[union-attr]
    due = re.findall(r"<tr><td>\w+ (\d{4}-\d\d-\d\d) (\d\d:\d\d)</td><td>(\d+)</td>", schedule)
    assert due and {t for _, t, _ in due} <= {"08:00", "20:00", "09:00"}, "local times of data/checkins.yml"
    on_doses = [int(day) for d, _, day in due if d in {x.isoformat() for x in doses}]
    assert len(on_doses) == 4 and set(on_doses) == {0}, "each step-up dose restarts the count, twice that day"


def test_the_patient_page_shows_neuro_check_scores_over_time(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    create_checkin_tables(engine)
    client = _admin(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code="NEURO1", label="Bed 1", therapy="tisagenlecleucel", infusion_date="2026-12-01", created_by="boss", created_at=0
            )
        )  # noqa: E501
    tracking = alerts.AlertConfig(levels=("emergency",)).tracking
    link_chat(engine, "NEURO1", 5, "tg-5", now=1.0)
    config = neuro.load_neuro_config()
    at = datetime(2026, 12, 3, 20, tzinfo=UTC).timestamp()
    for answers in ("p" * 10, "p" * 10, "ppf"):
        step = neuro.start(engine, config, 5, "tg-5", at)
        for index, verdict in enumerate(answers):
            neuro.answer(engine, config, tracking, step.check_id, index, verdict, at + index + 1)
        at += 86400
    page = client.get("/patients/NEURO1").text
    table = re.search(r'<table class="list" id="neuro-checks">(.*?)</table>', page, re.S).group(1)  # type: ignore[union-attr]
    assert re.findall(r'data-score="(\d*)"', table) == ["10", "10", "2"]
    assert table.count("<strong>baseline</strong>") == 1 and "baseline 10/10" in table
    assert "stopped: the city was right before → emergency" in table


def test_the_worklist_lists_who_is_overdue_before_it_becomes_no_response(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    create_checkin_tables(engine)
    client = _admin(engine)
    now = time.time()
    config = load_checkin_config()
    with engine.begin() as conn:
        for code, label in (("LATE1", "Bed 2"), ("FRESH1", "Bed 3"), ("DONE1", "Bed 5")):
            conn.execute(sa.insert(ENROLMENTS).values(code=code, label=label, therapy="tisagenlecleucel", created_by="boss", created_at=0))
        for code, age, status in (
            ("LATE1", config.remind_after_s + 60, "sent"),
            ("FRESH1", 60, "sent"),
            ("DONE1", config.remind_after_s + 60, "answered"),
        ):  # noqa: E501
            conn.execute(
                sa.insert(CHECKINS).values(
                    key=f"{code}@x", code=code, chat_id=1, sender_id=f"tg-{code}", due_at=now - age, day=2, missed_level="emergency",
                    neuro=False, status=status, owner="r", claimed_at=now - age, sent_at=now - age,
                )
            )  # fmt: skip
    table = re.search(r'<table class="list" id="overdue-checkins">(.*?)</table>', client.get("/worklist").text, re.S)
    assert table is not None and re.findall(r'<a href="/patients/(\w+)">', table.group(1)) == ["LATE1"]

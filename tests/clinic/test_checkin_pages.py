"""What the clinic sees of check-ins, and how it pauses them (the app in-process, a real SQLite file)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import sqlalchemy as sa
from starlette.testclient import TestClient

from bot.checkins.store import CHECKINS, create_checkin_tables
from bot.clinic import accounts
from bot.clinic.schema import AUDIT, ENROLMENTS
from bot.clinic.web import create_app
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

"""Check-ins through the real relay and Rasa, on the fake Bot API: a schedule due in seconds
(data/checkins.yml's format, its times written by the test), a linked chat, the answers."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.checkins.store import CHECKINS
from bot.clinic import worklist
from bot.clinic.schema import ENROLMENTS, create_tables
from bot.db import create_db_engine
from bot.servers import Stack
from bot.telegram.fake_api import FakeTelegram
from tests.integration.conftest import BOT_TOKEN, RelayRig, relay_settings, wait_until

pytestmark = pytest.mark.integration
CHAT = 61001


@pytest.fixture
def rig(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RelayRig, str, list[datetime]]]:
    now = datetime.now(UTC).replace(microsecond=0)
    times = [now + timedelta(seconds=s) for s in (20, 45, 70)]
    config = {
        # quiet hours far from now (a minute, twelve hours away)
        "quiet_hours": {"start": (now + timedelta(hours=12)).strftime("%H:%M"), "end": (now + timedelta(hours=12, minutes=1)).strftime("%H:%M")},  # noqa: E501
        "remind_after_min": 0.2, "missed_after_min": 0.4, "stale_after_min": 5, "tick_s": 1,
        "schedules": {"car_t": [{"days": [0, 1], "times": [t.strftime("%H:%M:%S") for t in times], "missed_level": "emergency"}]},
        "texts": {**yaml_texts()},
    }  # fmt: skip
    path = tmp_path / "checkins.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    monkeypatch.setenv("CRS_CHECKINS", str(path))
    code = f"CHK{uuid.uuid4().hex[:6].upper()}"
    engine = create_db_engine(stack.settings.database_url)
    create_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code=code, label="Check-in test", therapy="tisagenlecleucel", infusion_date=now.date().isoformat(),
                created_by="test", created_at=0, timezone="UTC",
            )
        )  # fmt: skip
    engine.dispose()
    fake = FakeTelegram(token=BOT_TOKEN).start()
    settings = relay_settings(stack, fake, tmp_path)
    relay_stack = Stack(settings, log_dir=tmp_path)
    relay_stack.start_relay()
    try:
        yield RelayRig(fake, relay_stack, settings), code, times
    finally:
        relay_stack.stop()
        fake.stop()


def yaml_texts() -> dict[str, str]:
    import yaml

    from bot import PROJECT_ROOT

    return yaml.safe_load((Path(PROJECT_ROOT) / "data" / "checkins.yml").read_text())["texts"]


def test_a_linked_patient_gets_check_ins_and_every_answer_is_handled(rig: tuple[RelayRig, str, list[datetime]]) -> None:
    relay, code, times = rig
    fake = relay.fake
    fake.push_text(CHAT, f"/start {code.lower()}")
    engine = create_db_engine(relay.settings.database_url)

    def statuses() -> list[str]:
        with engine.connect() as conn:
            return [r.status for r in conn.execute(sa.select(CHECKINS.c.status).where(CHECKINS.c.code == code).order_by(CHECKINS.c.due_at))]

    # 1. the first check-in, with its buttons; a temperature reply escalates through Rasa with 911
    first = fake.wait_for(CHAT, lambda s: "check-in for day 0" in str(s.params.get("text")), timeout=60)
    buttons = [b["callback_data"] for row in first.params["reply_markup"]["inline_keyboard"] for b in row]
    assert buttons == ["checkin:none", "checkin:yes"]
    count = len(fake.sent(CHAT))
    fake.push_text(CHAT, "39.6")
    fake.wait_for(CHAT, lambda s: "911" in str(s.params.get("text")), timeout=30, after=count)
    wait_until(lambda: statuses()[:1] == ["answered"], what="the first check-in answered")

    # 2. the second: "Yes, one of these" says 911 at once and puts the patient on the worklist
    second = fake.wait_for(CHAT, lambda s: "check-in for day 0" in str(s.params.get("text")), timeout=60, after=count + 1)
    count = len(fake.sent(CHAT))
    fake.push_callback(CHAT, second, "checkin:yes")
    fake.wait_for(CHAT, lambda s: "Call 911 now" in str(s.params.get("text")), timeout=15, after=count)
    sender = relay.sender(CHAT)
    wait_until(
        lambda: any(i.sender_id == sender and i.level == "emergency" for i in worklist.items(engine, "open")[0]), what="emergency item"
    )

    # 3. the third, unanswered: one reminder, then "no response" on the patient's worklist item
    third = fake.wait_for(CHAT, lambda s: "check-in for day 0" in str(s.params.get("text")), timeout=60, after=count + 1)
    reminder = fake.wait_for(
        CHAT, lambda s: "reminder" in str(s.params.get("text")).lower(), timeout=40, after=fake.sent(CHAT).index(third)
    )
    assert reminder is not None

    def no_response() -> bool:
        return any(i.sender_id == sender and any("no response" in r for r in i.reasons) for i in worklist.items(engine, "open")[0])

    wait_until(no_response, timeout=40, what="no response recorded for the clinic")
    assert statuses() == ["answered", "answered", "missed"]
    checkins = [s for s in fake.sent(CHAT) if "check-in for day 0" in str(s.params.get("text"))]
    reminders = [s for s in fake.sent(CHAT) if "reminder" in str(s.params.get("text")).lower()]
    assert len(checkins) == 3 and len(reminders) == 1, "each once"

    # the patient turns them off, and back on
    count = len(fake.sent(CHAT))
    fake.push_text(CHAT, "/checkins off")
    fake.wait_for(CHAT, lambda s: "Check-ins are off" in str(s.params.get("text")), timeout=15, after=count)
    engine.dispose()

"""Check-ins through the real relay and Rasa, on the fake Bot API: a schedule due in seconds
(data/checkins.yml's format, its times written by the test), a linked chat, the answers."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.checkins.scheduler import link_chat
from bot.checkins.store import CHECKINS, create_checkin_tables
from bot.clinic import worklist
from bot.clinic.schema import ENROLMENTS
from bot.db import create_db_engine
from bot.servers import Stack
from tests.integration.conftest import BOT_TOKEN, RelayRig, relay_settings, wait_until
from tools.fake_bot_api import FakeTelegram
from tools.pgcluster import PgCluster

pytestmark = pytest.mark.integration
CHAT = 61001


def write_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, now: datetime, offsets: tuple[int, ...], **timing: float
) -> list[datetime]:
    """data/checkins.yml's format with check-ins `offsets` seconds from now, for the relay the test starts."""
    times = [now + timedelta(seconds=s) for s in offsets]
    config = {
        # quiet hours far from now (a minute, twelve hours away)
        "quiet_hours": {"start": (now + timedelta(hours=12)).strftime("%H:%M"), "end": (now + timedelta(hours=12, minutes=1)).strftime("%H:%M")},  # noqa: E501
        "remind_after_min": 0.2, "missed_after_min": 0.4, "stale_after_min": 5, "tick_s": 1, **timing,
        "schedules": {"car_t": [{"days": [0, 1], "times": [t.strftime("%H:%M:%S") for t in times], "missed_level": "emergency"}]},
        "texts": {**yaml_texts()},
    }  # fmt: skip
    path = tmp_path / "checkins.yml"
    path.write_text(json.dumps(config))  # JSON is YAML
    monkeypatch.setenv("CRS_CHECKINS", str(path))
    return times


def enrol(url: str, infusion: str, code: str | None = None, zone: str = "UTC") -> str:
    """A CAR-T enrolment in the database at `url`; returns its code."""
    code = code or f"CHK{uuid.uuid4().hex[:6].upper()}"
    engine = create_db_engine(url)
    create_checkin_tables(engine)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code=code, label="Check-in test", therapy="tisagenlecleucel", infusion_date=infusion,
                created_by="test", created_at=0, timezone=zone,
            )
        )  # fmt: skip
    engine.dispose()
    return code


@pytest.fixture
def rig(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[RelayRig, str, list[datetime]]]:
    now = datetime.now(UTC).replace(microsecond=0)
    times = write_schedule(tmp_path, monkeypatch, now, (20, 45, 70, 110))
    code = enrol(stack.settings.database_url, now.date().isoformat())
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

    # 2. the second: "Yes, one of these" goes to the triage (911) and puts the patient on the worklist at once
    second = fake.wait_for(CHAT, lambda s: "check-in for day 0" in str(s.params.get("text")), timeout=60, after=count + 1)
    count = len(fake.sent(CHAT))
    fake.push_callback(CHAT, second, "checkin:yes")
    fake.wait_for(CHAT, lambda s: "Call 911" in str(s.params.get("text")), timeout=15, after=count)
    sender = relay.sender(CHAT)
    wait_until(
        lambda: any(i.sender_id == sender and i.level == "emergency" for i in worklist.items(engine, "open")[0]), what="emergency item"
    )

    # 3. the third: "37.1", then "ok" (asked again, with buttons), then "yeah": its yes/no question answered
    #    over three messages, an emergency through the triage with the question in the reason
    third = fake.wait_for(CHAT, lambda s: "check-in for day 0" in str(s.params.get("text")), timeout=60, after=count + 1)
    for text, expect in (("37.1", ""), ("ok", "To be sure I understood"), ("yeah", "Call 911")):
        count = len(fake.sent(CHAT))
        fake.push_text(CHAT, text)
        reply = fake.wait_for(CHAT, lambda s, e=expect: e in str(s.params.get("text")), timeout=30, after=count)
    assert reply is not None
    reasons = relay.tracker(CHAT)["slots"]["triage_reasons"]
    assert any(r.startswith("answered yes to the check-in's emergency question (") for r in reasons), reasons

    # 4. the fourth, unanswered: one reminder, then "no response" on the patient's worklist item
    fourth = fake.wait_for(CHAT, lambda s: "check-in for day 0" in str(s.params.get("text")), timeout=60, after=count + 1)
    reminder = fake.wait_for(
        CHAT, lambda s: "reminder" in str(s.params.get("text")).lower(), timeout=40, after=fake.sent(CHAT).index(fourth)
    )
    assert reminder is not None

    def no_response() -> bool:
        return any(i.sender_id == sender and any("no response" in r for r in i.reasons) for i in worklist.items(engine, "open")[0])

    wait_until(no_response, timeout=40, what="no response recorded for the clinic")
    assert statuses() == ["answered", "answered", "answered", "missed"]
    checkins = [s for s in fake.sent(CHAT) if "check-in for day 0" in str(s.params.get("text"))]
    reminders = [s for s in fake.sent(CHAT) if "reminder" in str(s.params.get("text")).lower()]
    assert len(checkins) == 4 and len(reminders) == 1, "each once"
    assert third is not None

    # the patient turns them off, and back on
    count = len(fake.sent(CHAT))
    fake.push_text(CHAT, "/checkins off")
    fake.wait_for(CHAT, lambda s: "Check-ins are off" in str(s.params.get("text")), timeout=15, after=count)
    engine.dispose()


def test_a_caregiver_neuro_check_below_its_baseline_escalates_through_the_triage(rig: tuple[RelayRig, str, list[datetime]]) -> None:
    """/neurocheck on an unlinked chat: a full baseline, then "the month" not right → Rasa's emergency
    advice with 911, the reason naming the item in the conversation's triage."""
    relay, _, _ = rig
    fake, chat = relay.fake, CHAT + 7

    def tap_through(verdicts: str) -> None:
        for verdict in verdicts:
            question = fake.wait_for(chat, lambda s: "neuro:" in json.dumps(s.params.get("reply_markup") or {}), after=len(seen))
            seen.extend(fake.sent(chat)[len(seen) :])
            data = [b["callback_data"] for row in question.params["reply_markup"]["inline_keyboard"] for b in row]
            fake.push_callback(chat, question, next(d for d in data if d.endswith(":" + verdict)))

    seen: list = []
    fake.push_text(chat, "/neurocheck")
    intro = fake.wait_for(chat, lambda s: "not a medical assessment" in str(s.params.get("text")), timeout=20)
    assert intro is not None
    tap_through("p" * 10)
    done = fake.wait_for(chat, lambda s: "baseline" in str(s.params.get("text")), timeout=20, after=len(seen))
    assert "10/10" in done.params["text"]

    seen[:] = fake.sent(chat)
    fake.push_text(chat, "/neurocheck")
    tap_through("pf")  # the month
    advice = fake.wait_for(chat, lambda s: "911" in str(s.params.get("text")), timeout=30, after=len(seen))
    why = fake.wait_for(chat, lambda s: "the month" in str(s.params.get("text")), timeout=30, after=len(seen))
    assert fake.sent(chat).index(advice) <= fake.sent(chat).index(why), "911 first"
    slots = relay.tracker(chat)["slots"]
    assert slots["triage_level"] == "emergency" and "confusion" in slots["symptoms"]
    assert any("the month not right" in r and "confusion → emergency" in r for r in slots["triage_reasons"])
    questions = [s for s in fake.sent(chat) if "neuro:" in json.dumps(s.params.get("reply_markup") or {})]
    assert len(questions) == 12, "10 questions, then 2 until the item right before was not right: each asked once"


def test_a_relay_killed_mid_schedule_neither_repeats_nor_floods(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed after the first check-in; the second falls due and goes stale while it is down, the
    third falls due just before it is back: after the restart the third is sent once, the second is
    recorded not sent, the first is not repeated."""
    now = datetime.now(UTC).replace(microsecond=0)
    times = write_schedule(tmp_path, monkeypatch, now, (30, 50, 110), remind_after_min=10, missed_after_min=20, stale_after_min=0.75)
    code = enrol(stack.settings.database_url, now.date().isoformat())
    fake = FakeTelegram(token=BOT_TOKEN).start()
    settings = relay_settings(stack, fake, tmp_path)
    relay_stack = Stack(settings, log_dir=tmp_path)
    engine = create_db_engine(settings.database_url)

    def checkins() -> list:
        return [s for s in fake.sent(CHAT) if "check-in for day 0" in str(s.params.get("text"))]

    def statuses() -> list[str]:
        with engine.connect() as conn:
            return [r.status for r in conn.execute(sa.select(CHECKINS.c.status).where(CHECKINS.c.code == code).order_by(CHECKINS.c.due_at))]

    try:
        relay_stack.start_relay()
        fake.push_text(CHAT, f"/start {code}")
        # killed once the first is delivered *and* recorded: killed between the two, the claim is
        # taken over after CLAIM_LEASE_S (tests/checkins/test_scheduler.py), which this test's clock does not reach
        wait_until(lambda: len(checkins()) == 1 and statuses()[:1] == ["sent"], timeout=60, what="the first check-in recorded sent")
        relay_stack.kill("relay")  # SIGKILL: no goodbye
        wait_until(lambda: datetime.now(UTC) > times[2] + timedelta(seconds=2), timeout=120, what="the third check-in's time")
        assert len(checkins()) == 1, "nothing sent while down"
        relay_stack.start_relay()
        wait_until(lambda: len(statuses()) == 3 and statuses()[2] == "sent", timeout=45, what="the third check-in sent after the restart")
        time.sleep(5)  # a few more rounds of the scheduler: nothing more may go out
        assert statuses() == ["sent", "not_sent", "sent"]
        assert len(checkins()) == 2, "the first not repeated, the stale second not sent late"
    finally:
        relay_stack.stop()
        fake.stop()
        engine.dispose()


def test_28_simulated_days_of_check_ins_reach_the_bot_api_at_their_local_times(tmp_path: Path) -> None:
    """The scheduler with a controlled clock, sending through python-telegram-bot's real HTTP stack
    (the relay's own sender) to the fake Bot API: every check-in of a CAR-T enrolment in Chicago,
    at 08:00 / 20:00 then 09:00 local time, none in quiet hours, each once."""
    from zoneinfo import ZoneInfo

    from telegram import Bot

    from bot.checkins.schedule import load_checkin_config
    from bot.checkins.scheduler import CheckinScheduler, Texts
    from bot.telegram.aiohttp_request import AiohttpRequest
    from bot.telegram.app import bot_api_urls, checkin_sender

    zone = ZoneInfo("America/Chicago")
    infusion = datetime(2026, 3, 1, tzinfo=zone)  # across the daylight-saving change of 8 March
    url = f"sqlite:///{tmp_path / 'days.db'}"
    enrol(url, "2026-03-01", "DAYS1", "America/Chicago")
    engine = create_db_engine(url)
    link_chat(engine, "DAYS1", CHAT, "tg-days", now=infusion.timestamp())
    fake = FakeTelegram(token=BOT_TOKEN).start()
    clock = [infusion.timestamp()]
    sent_at: list[float] = []

    async def run() -> None:
        api, files = bot_api_urls(fake.base_url)
        async with Bot(BOT_TOKEN, base_url=api, base_file_url=files, request=AiohttpRequest()) as bot:
            send = checkin_sender(bot)

            async def timed(chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
                await send(chat_id, text, buttons)
                sent_at.append(clock[0])

            config = load_checkin_config()
            tracking = worklist.Tracking(levels=("emergency",))
            s = CheckinScheduler(
                engine, config, Texts.of(config), timed, "relay-t", tracking, clock=lambda: clock[0], neuro_button="Neuro check"
            )
            while clock[0] < infusion.timestamp() + 30 * 86400:
                before = len(sent_at)
                await s.tick()
                if len(sent_at) > before:
                    s.answered(CHAT, at=clock[0] + 60)
                clock[0] += 900

    try:
        asyncio.run(run())
        messages = [m for m in fake.sent(CHAT) if "check-in for day" in str(m.params.get("text"))]
        local = [datetime.fromtimestamp(t, zone).strftime("%H:%M") for t in sent_at]
        assert len(messages) == len(sent_at) == 15 * 2 + 14, "days 0-14 twice, 15-28 once, each once"
        assert local == ["08:00", "20:00"] * 15 + ["09:00"] * 14, "local times, through the daylight-saving change"
        evening = messages[1].params["reply_markup"]["inline_keyboard"][0]
        assert [b["callback_data"] for b in evening] == ["checkin:none", "checkin:yes", "neuro:start"]
        assert "day 28 after" in messages[-1].params["text"]
    finally:
        fake.stop()
        engine.dispose()


def test_two_relay_replicas_on_postgresql_send_each_check_in_once(
    stack: Stack, pg_cluster: PgCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two relay processes on one PostgreSQL database, both running the scheduler: each check-in
    reaches the patient once (the claim is the row's primary key)."""
    now = datetime.now(UTC).replace(microsecond=0)
    write_schedule(tmp_path, monkeypatch, now, (40, 50, 60, 61), remind_after_min=10, missed_after_min=20)
    url = pg_cluster.create_database("checkins_replicas")
    enrol(url, now.date().isoformat(), "TWO1")
    engine = create_db_engine(url)
    link_chat(engine, "TWO1", CHAT, "tg-two", now=now.timestamp())
    fake = FakeTelegram(token=BOT_TOKEN).start()
    replicas = []
    try:
        for name in ("a", "b"):
            settings = relay_settings(stack, fake, tmp_path / name, database_url=url)
            (tmp_path / name).mkdir()
            replica = Stack(settings, log_dir=tmp_path / name)
            replica.start_relay()
            replicas.append(replica)

        def checkins() -> list:
            return [s for s in fake.sent(CHAT) if "check-in for day 0" in str(s.params.get("text"))]

        wait_until(lambda: len(checkins()) >= 4, timeout=90, what="four check-ins")
        time.sleep(6)  # several more rounds of both schedulers
        with engine.connect() as conn:
            rows = conn.execute(sa.select(CHECKINS.c.status, CHECKINS.c.owner).where(CHECKINS.c.code == "TWO1")).all()
        assert len(checkins()) == 4 and [r.status for r in rows] == ["sent"] * 4, "each once"
    finally:
        for replica in replicas:
            replica.stop()
        fake.stop()
        engine.dispose()

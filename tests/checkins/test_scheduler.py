"""The check-in scheduler on a real SQLite file with a controlled clock: on time, once, no burst,
a reminder then a worklist item when nobody answers."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from telegram.error import Forbidden, TimedOut

from bot.checkins.schedule import load_checkin_config
from bot.checkins.scheduler import CLAIM_LEASE_S, CheckinScheduler, Texts, link_chat, set_opted_out
from bot.checkins.store import CHECKINS, create_checkin_tables
from bot.clinic import alerts, worklist
from bot.clinic.schema import ENROLMENTS
from bot.db import create_db_engine

ZONE = "America/Chicago"
INFUSION = date(2026, 12, 1)
CHAT = 777


class Clock:
    def __init__(self, at: datetime) -> None:
        self.now = at.timestamp()

    def __call__(self) -> float:
        return self.now


class Outbox:
    """Stands in for Telegram's sendMessage (the relay's real sending is tested with the fake Bot API)."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.sent = clock, []

    async def __call__(self, chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
        self.sent.append((self.clock.now, chat_id, text, buttons))


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    e = create_db_engine(f"sqlite:///{tmp_path / 'checkins.db'}")
    create_checkin_tables(e)
    with e.begin() as conn:
        conn.execute(
            sa.insert(ENROLMENTS).values(
                code="CART1", label="Bed 3", therapy="tisagenlecleucel", infusion_date=INFUSION.isoformat(),
                created_by="admin", created_at=0, timezone=ZONE,
            )
        )  # fmt: skip
    return e


def local(day: int, hh: int, mm: int = 0) -> datetime:
    return datetime.combine(date.fromordinal(INFUSION.toordinal() + day), time(hh, mm), tzinfo=ZoneInfo(ZONE))


def scheduler(engine: sa.engine.Engine, clock: Clock, outbox: Outbox, owner: str = "relay-a") -> CheckinScheduler:
    config = load_checkin_config()
    tracking = alerts.AlertConfig(levels=("emergency",), webhook_url="http://127.0.0.1:9/hook").tracking
    return CheckinScheduler(
        engine, config, Texts.of(config), outbox, owner, tracking, default_zone="UTC", clock=clock, neuro_button="Neuro check"
    )


def run(s: CheckinScheduler) -> dict[str, int]:
    return asyncio.run(s.tick())


@pytest.mark.slow
def test_28_days_of_check_ins_arrive_at_their_local_times_when_answered(engine: sa.engine.Engine) -> None:
    clock = Clock(local(0, 0))
    outbox = Outbox(clock)
    link_chat(engine, "cart1", CHAT, "tg-cart1", now=clock.now)
    s = scheduler(engine, clock, outbox)
    while clock.now < local(30, 0).timestamp():
        run(s)
        if outbox.sent and outbox.sent[-1][0] == clock.now:
            s.answered(CHAT, at=clock.now + 60)  # the patient answers within a minute
        clock.now += 900  # a round every 15 minutes (the relay's is 30 s: the times are on this grid)
    times = [datetime.fromtimestamp(at, ZoneInfo(ZONE)) for at, *_ in outbox.sent]
    assert len(times) == 15 * 2 + 14
    assert {t.strftime("%H:%M") for t in times} <= {"08:00", "20:00", "09:00"}, "on time, in the patient's zone"
    assert all(chat == CHAT for _, chat, _, _ in outbox.sent)
    first = outbox.sent[0]
    assert "day 0 after tisagenlecleucel" in first[2] and "911" in first[2] and [b for _, b in first[3]] == ["checkin:none", "checkin:yes"]
    assert "/neurocheck" in outbox.sent[1][2] and "/neurocheck" not in first[2], "offered in the evening one"
    assert ("Neuro check", "neuro:start") in outbox.sent[1][3], "with a button to start it"
    assert worklist.items(engine, "all")[1] == 0, "all answered: nothing for the clinic"


def test_a_missed_check_in_reminds_once_then_opens_one_worklist_item_with_an_alert(engine: sa.engine.Engine) -> None:
    clock = Clock(local(2, 7, 55))
    outbox = Outbox(clock)
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=clock.now)
    s = scheduler(engine, clock, outbox)
    while clock.now < local(2, 11, 0).timestamp():
        run(s)
        clock.now += 60
    texts = [t for _, _, t, _ in outbox.sent]
    assert len(texts) == 2 and "reminder" in texts[1].lower(), texts
    [item] = worklist.items(engine, "open")[0]
    assert item.level == "emergency" and item.sender_id == "tg-cart1" and "no response to the check-in" in item.reasons[0]
    assert [(n["kind"], n["level"]) for n in alerts.due(engine, clock.now + 5)] == [("alert", "emergency")]
    run(s)
    assert len(outbox.sent) == 2 and worklist.items(engine, "all")[1] == 1, "once"


def test_an_answer_stops_the_reminder(engine: sa.engine.Engine) -> None:
    clock = Clock(local(3, 7, 59))
    outbox = Outbox(clock)
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=clock.now)
    s = scheduler(engine, clock, outbox)
    run(s)
    clock.now = local(3, 8, 0).timestamp()
    run(s)
    assert len(outbox.sent) == 1
    assert s.answered(CHAT, at=clock.now + 600) == 1
    clock.now = local(3, 11, 0).timestamp()
    run(s)
    assert len(outbox.sent) == 1 and worklist.items(engine, "all")[1] == 0


def test_a_check_in_s_question_stays_open_for_a_yes_or_no_after_the_first_reply(engine: sa.engine.Engine) -> None:
    """ "37.2" then "yes": the second message answers the question too, until question_open_min."""
    clock = Clock(local(5, 7, 59))
    outbox = Outbox(clock)
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=clock.now)
    s = scheduler(engine, clock, outbox)
    assert s.asked(CHAT, at=clock.now) is None
    clock.now = local(5, 8, 0).timestamp()
    run(s)
    assert s.answered(CHAT, at=clock.now + 60) == 1  # "37.2"
    asked = s.asked(CHAT, at=clock.now + 120)  # "yes"
    assert asked is not None and asked["key"].endswith("@2026-12-06T08:00") and asked["sent_at"] == clock.now
    assert s.asked(CHAT, at=clock.now + s.config.question_open_s + 1) is None


@pytest.mark.parametrize(("error", "answered_stays"), [(TimedOut(), True), (Forbidden("blocked"), False)])
def test_a_refused_send_is_not_answered_by_a_message_meanwhile_but_a_timed_out_one_may_have_arrived(
    engine: sa.engine.Engine, error: Exception, answered_stays: bool
) -> None:
    clock = Clock(local(6, 7, 59))
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=clock.now)

    class Failing(Outbox):
        async def __call__(self, chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
            s.answered(CHAT, at=clock.now)  # the patient wrote while Telegram was being asked
            raise error

    s = scheduler(engine, clock, Failing(clock))
    clock.now = local(6, 8, 0).timestamp()
    run(s)
    with engine.connect() as conn:
        status = conn.execute(sa.select(CHECKINS.c.status)).scalar_one()
    assert status == ("answered" if answered_stays else "claimed"), "refused: retried after the lease, not counted as answered"


def test_a_tap_before_the_send_is_recorded_still_answers(engine: sa.engine.Engine) -> None:
    """Telegram shows the check-in before the relay has recorded it sent: a quick tap must count."""
    clock = Clock(
        local(
            4,
            7,
            59,
        )
    )
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=clock.now)

    class QuickPatient(Outbox):
        async def __call__(self, chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
            await super().__call__(chat_id, text, buttons)
            assert s.answered(CHAT, at=clock.now) == 1

    outbox = QuickPatient(clock)
    s = scheduler(engine, clock, outbox)
    clock.now = local(4, 8, 0).timestamp()
    run(s)
    clock.now = local(4, 11, 0).timestamp()
    run(s)
    assert len(outbox.sent) == 1 and worklist.items(engine, "all")[1] == 0, "no reminder, nothing for the clinic"
    with engine.connect() as conn:
        assert conn.execute(sa.select(CHECKINS.c.status, CHECKINS.c.sent_at)).one()[0] == "answered"


@pytest.mark.slow
def test_two_replicas_send_each_check_in_once(engine: sa.engine.Engine) -> None:
    clock = Clock(local(1, 0))
    outbox = Outbox(clock)
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=clock.now)
    a, b = scheduler(engine, clock, outbox, "relay-a"), scheduler(engine, clock, outbox, "relay-b")

    async def both() -> None:
        await asyncio.gather(a.tick(), b.tick())

    while clock.now < local(2, 0).timestamp():
        asyncio.run(both())
        for s in (a, b):
            s.answered(CHAT, at=clock.now + 1)
        clock.now += 120
    assert [datetime.fromtimestamp(at, ZoneInfo(ZONE)).strftime("%H:%M") for at, *_ in outbox.sent] == ["08:00", "20:00"]


class Killed(BaseException):
    """The relay dies inside the send (SIGKILL): its claim stays, unsent."""


DAY1_8AM = "CART1@2026-12-02T08:00"


def killed_mid_send(engine: sa.engine.Engine) -> Clock:
    """relay-a claims day 1's 08:00 check-in and dies sending it; the clock it died at."""
    clock = Clock(local(1, 8, 0))
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=local(0, 0).timestamp())

    async def die(chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
        raise Killed

    with pytest.raises(Killed):
        run(scheduler(engine, clock, die, "relay-a"))
    return clock


def test_a_claim_whose_owner_died_before_sending_is_taken_over_once_after_the_lease(engine: sa.engine.Engine) -> None:
    clock = killed_mid_send(engine)
    outbox = Outbox(clock)
    b = scheduler(engine, clock, outbox, "relay-b")
    clock.now += CLAIM_LEASE_S - 30
    assert run(b)["sent"] == 0 and outbox.sent == [], "a claim within its lease may still be sending"
    clock.now += 60
    assert run(b)["sent"] == 1
    run(b)
    with engine.connect() as conn:
        rows = conn.execute(sa.select(CHECKINS.c.status, CHECKINS.c.owner).where(CHECKINS.c.key == DAY1_8AM)).all()
    assert [tuple(r) for r in rows] == [("sent", "relay-b")] and len(outbox.sent) == 1


def test_a_claim_abandoned_until_it_went_stale_is_recorded_not_sent(engine: sa.engine.Engine) -> None:
    clock = killed_mid_send(engine)
    outbox = Outbox(clock)
    clock.now += load_checkin_config().stale_after_s + 60
    run(scheduler(engine, clock, outbox, "relay-b"))
    with engine.connect() as conn:
        assert conn.execute(sa.select(CHECKINS.c.status).where(CHECKINS.c.key == DAY1_8AM)).scalar_one() == "not_sent"
    assert outbox.sent == [], "no stale question out of the blue"


def test_a_relay_down_for_hours_sends_no_burst_of_stale_check_ins(engine: sa.engine.Engine) -> None:
    clock = Clock(local(4, 7, 0))
    outbox = Outbox(clock)
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=local(0, 0).timestamp())
    s = scheduler(engine, clock, outbox)
    run(s)
    assert outbox.sent == []
    clock.now = local(4, 20, 5).timestamp()  # down all day: 08:00 passed 12 hours ago, 20:00 five minutes ago
    result = run(s)
    assert result["sent"] == 1 and [t for _, _, t, _ in outbox.sent][0].startswith("Hello"), result
    with engine.connect() as conn:
        statuses = dict(conn.execute(sa.select(CHECKINS.c.key, CHECKINS.c.status)).all())
    assert statuses.pop("CART1@2026-12-05T20:00") == "sent"
    assert statuses["CART1@2026-12-05T08:00"] == "not_sent" and set(statuses.values()) == {"not_sent"}, "the missed ones are on record"
    run(s)
    assert len(outbox.sent) == 1, "a restart neither repeats nor floods"


def test_check_ins_stop_when_the_patient_says_so_or_the_clinic_pauses_them(engine: sa.engine.Engine) -> None:
    clock = Clock(local(5, 7, 59))
    outbox = Outbox(clock)
    link_chat(engine, "CART1", CHAT, "tg-cart1", now=clock.now)
    s = scheduler(engine, clock, outbox)
    assert set_opted_out(engine, CHAT, True) == 1
    clock.now = local(5, 8, 1).timestamp()
    run(s)
    assert outbox.sent == []
    set_opted_out(engine, CHAT, False)
    with engine.begin() as conn:
        conn.execute(sa.update(ENROLMENTS).values(checkins="paused"))
    run(s)
    assert outbox.sent == []
    with engine.begin() as conn:
        conn.execute(sa.update(ENROLMENTS).values(checkins="active"))
    run(s)
    assert len(outbox.sent) == 1


def test_an_unknown_code_links_nothing(engine: sa.engine.Engine) -> None:
    assert link_chat(engine, "NOPE", CHAT, "tg-x") is False

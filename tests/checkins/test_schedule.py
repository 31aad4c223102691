"""Check-in schedules from data/checkins.yml, walked over simulated weeks: local times, quiet hours, DST."""

from __future__ import annotations

from datetime import date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from bot.checkins.schedule import CheckinConfigError, due_between, due_for, load_checkin_config

CHICAGO = ZoneInfo("America/Chicago")


def span(infusion: date, zone: ZoneInfo, days: int = 40) -> tuple[float, float]:
    start = datetime.combine(infusion, time(0, 0), tzinfo=zone).timestamp()
    return start, start + days * 86400


def test_a_car_t_enrolment_gets_its_check_ins_at_local_times_for_28_days_across_a_dst_change() -> None:
    config = load_checkin_config()
    infusion = date(2026, 10, 20)  # US daylight saving ends on 2026-11-01: 08:00 stays 08:00
    due = due_between(config, "ABC", "car_t", infusion, CHICAGO, *span(infusion, CHICAGO))
    assert len(due) == 15 * 2 + 14 * 1, "twice a day on days 0–14, daily on days 15–28"
    assert [d.local.strftime("%H:%M") for d in due[:4]] == ["08:00", "20:00", "08:00", "20:00"]
    assert {d.local.strftime("%H:%M") for d in due if d.day >= 15} == {"09:00"}
    assert {d.local.utcoffset().total_seconds() / 3600 for d in due} == {-5.0, -6.0}, "both sides of the change"
    assert due[0].day == 0 and due[-1].day == 28 and len({d.key for d in due}) == len(due)
    assert [d.missed_level for d in due[:1]] == ["emergency"] and due[-1].missed_level == "urgent"
    assert [d.neuro for d in due[:2]] == [False, True], "the evening check-in offers the neuro check"
    assert due_between(config, "ABC", "antibody", infusion, CHICAGO, *span(infusion, CHICAGO)) == [], "no schedule, no check-ins"


def test_a_check_in_in_quiet_hours_moves_to_their_end(tmp_path: Path) -> None:
    custom = tmp_path / "checkins.yml"
    custom.write_text(
        "quiet_hours: {start: '22:00', end: '07:30'}\n"
        "schedules:\n  car_t:\n    - {days: [0, 1], times: ['06:00', '07:30', '12:00', '23:15'], missed_level: urgent}\n"
    )
    config = load_checkin_config(custom)
    infusion = date(2026, 12, 1)
    due = due_between(config, "Q", "car_t", infusion, CHICAGO, *span(infusion, CHICAGO, days=3))
    local = [d.local.strftime("%d %H:%M") for d in due]
    # 06:00 → 07:30 the same day (merged with the 07:30 one); 23:15 → 07:30 the next day (merged again)
    assert local == ["01 07:30", "01 12:00", "02 07:30", "02 12:00", "03 07:30"]
    assert all(not config.in_quiet_hours(d.local.time()) for d in due)


def test_a_window_of_time_gives_only_what_fell_due_in_it() -> None:
    config = load_checkin_config()
    infusion = date(2026, 12, 1)
    start, _ = span(infusion, CHICAGO)
    morning = datetime(2026, 12, 3, 8, 0, tzinfo=CHICAGO).timestamp()
    due = due_between(config, "ABC", "car_t", infusion, CHICAGO, morning - 60, morning + 60)
    assert [(d.day, d.local.strftime("%H:%M")) for d in due] == [(2, "08:00")]
    assert due_between(config, "ABC", "car_t", infusion, CHICAGO, start, start) == []


@pytest.mark.parametrize(
    "bad, message",
    [
        ("schedules: {car_t: [{days: [3, 1], times: ['08:00'], missed_level: urgent}]}", "days"),
        ("schedules: {car_t: [{days: [0, 1], times: ['8 o clock'], missed_level: urgent}]}", "not a time"),
        ("schedules: {car_t: [{days: [0, 1], times: ['08:00'], missed_level: panic}]}", "missed_level"),
        ("schedules: {car_t: [{days: [0, 1], times: ['08:00'], missed_level: urgent, neuro_check: ['09:00']}]}", "neuro_check"),
    ],
)
def test_a_clinics_typo_fails_loudly(tmp_path: Path, bad: str, message: str) -> None:
    path = tmp_path / "checkins.yml"
    path.write_text(bad)
    with pytest.raises(CheckinConfigError, match=message):
        load_checkin_config(path)


def test_step_up_doses_each_restart_the_schedule_and_a_day_follows_only_its_latest_dose() -> None:
    config = load_checkin_config()
    first = date(2026, 12, 1)
    doses = [first, date(2026, 12, 4), date(2026, 12, 6)]  # teclistamab-like step-up: day 0, 3, 5
    due = due_for(config, "TEC", "t_cell_engager", doses, CHICAGO, *span(first, CHICAGO, days=20))
    by_day: dict[date, list[tuple[str, int]]] = {}
    for d in due:
        by_day.setdefault(d.local.date(), []).append((d.local.strftime("%H:%M"), d.day))
    assert by_day[date(2026, 12, 1)] == [("08:00", 0), ("20:00", 0)]
    assert by_day[date(2026, 12, 4)] == [("08:00", 0), ("20:00", 0)], "the second dose restarts day 0, twice a day"
    assert by_day[date(2026, 12, 5)] == [("08:00", 1), ("20:00", 1)], "not the first dose's 09:00 as well"
    assert by_day[date(2026, 12, 10)] == [("09:00", 4)] and max(by_day) == date(2026, 12, 13), "days 4-7 of the last dose"
    assert all(len({day for _, day in v}) == 1 for v in by_day.values()), "one day count per day"

"""The caregiver neuro check on a real SQLite file: the first complete check is the baseline, an item
right before and not right now escalates with that item, taps are counted once."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.checkins import neuro
from bot.checkins.scheduler import link_chat
from bot.checkins.store import create_checkin_tables
from bot.clinic import alerts
from bot.clinic.schema import ENROLMENTS, WORKLIST
from bot.db import create_db_engine
from bot.nlu.knowledge import load_knowledge_base

CHAT, SENDER = 4242, "tg-neuro"
CONFIG = neuro.load_neuro_config()
TRACKING = alerts.AlertConfig(levels=("emergency",)).tracking
ALL_RIGHT = neuro.PASS * len(CONFIG.items)


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    e = create_db_engine(f"sqlite:///{tmp_path / 'neuro.db'}")
    create_checkin_tables(e)
    return e


class Caregiver:
    """Taps through checks with a clock that moves a few seconds per tap."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.engine, self.now = engine, 1_800_000_000.0

    def check(self, answers: str) -> neuro.Step | None:
        step = neuro.start(self.engine, CONFIG, CHAT, SENDER, self.tick())
        last = None
        for index, verdict in enumerate(answers):
            last = neuro.answer(self.engine, CONFIG, TRACKING, step.check_id, index, verdict, self.tick())
            assert last is not None
            if last.kind != "question":
                return last
        return last

    def tick(self, seconds: float = 5) -> float:
        self.now += seconds
        return self.now


def test_the_data_file_maps_every_item_to_an_emergency_neuro_symptom() -> None:
    kb = load_knowledge_base()
    assert len(CONFIG.items) == 10  # orientation 4, naming 3, command, writing, attention: the ICE items
    assert {i.symptom for i in CONFIG.items} == {"confusion", "speech_difficulty"}
    assert all(kb.symptom_class(i.symptom) == "emergency" for i in CONFIG.items)


def test_the_first_complete_check_is_the_baseline_and_a_later_equal_one_is_the_same(engine: sa.engine.Engine) -> None:
    caregiver = Caregiver(engine)
    first = caregiver.check(ALL_RIGHT)
    assert first is not None and first.kind == "complete" and first.score == 10 and first.baseline_score is None
    second = caregiver.check(ALL_RIGHT)
    assert second is not None and second.kind == "complete" and second.baseline_score == 10
    rows = neuro.checks_of(engine, SENDER)
    assert [r["baseline"] for r in rows] == [True, False] and [r["score"] for r in rows] == [10, 10]


def test_an_item_right_at_baseline_and_not_right_now_stops_the_check_with_that_item(engine: sa.engine.Engine) -> None:
    caregiver = Caregiver(engine)
    caregiver.check(ALL_RIGHT)
    step = caregiver.check("ppf")  # the city
    assert step is not None and step.kind == "escalated" and step.newly_failed == "city"
    found = neuro.findings(CONFIG, step)["findings"]
    assert found == [
        {"symptom": "confusion", "item": "city", "evidence": "caregiver neuro check: the city not right, right in an earlier check"}
    ]
    naming = caregiver.check("ppppf")
    assert (
        naming is not None
        and naming.kind == "escalated"
        and neuro.findings(CONFIG, naming)["findings"][0]["symptom"] == "speech_difficulty"
    )
    assert [r["status"] for r in neuro.checks_of(engine, SENDER)] == ["complete", "escalated", "escalated"]


def test_an_item_not_right_at_baseline_too_does_not_escalate_but_the_baseline_tells_the_clinic(engine: sa.engine.Engine) -> None:
    caregiver = Caregiver(engine)
    baseline = caregiver.check("pppppppppf")  # could not count back from 100 already before
    assert baseline is not None and baseline.kind == "complete" and baseline.score == 9 and baseline.failed == ("counting",)
    with engine.connect() as conn:
        item = conn.execute(sa.select(WORKLIST)).mappings().one()
    assert item["level"] == CONFIG.baseline_not_full_level and "counting back from 100 by tens" in item["reasons"]
    again = caregiver.check("pppppppppf")
    assert again is not None and again.kind == "complete" and again.baseline_score == 9
    better = caregiver.check(ALL_RIGHT)
    assert better is not None and better.kind == "complete" and better.score == 10
    worse = caregiver.check("pppppppppf")  # right in the last check, not now
    assert worse is not None and worse.kind == "escalated" and worse.newly_failed == "counting"


def test_no_baseline_yet_means_nothing_to_compare_and_no_escalation(engine: sa.engine.Engine) -> None:
    step = Caregiver(engine).check("f" * 10)
    assert step is not None and step.kind == "complete" and step.score == 0 and step.baseline_score is None


def test_a_double_tap_or_an_old_button_changes_nothing(engine: sa.engine.Engine) -> None:
    caregiver = Caregiver(engine)
    step = neuro.start(engine, CONFIG, CHAT, SENDER, caregiver.tick())
    assert neuro.answer(engine, CONFIG, TRACKING, step.check_id, 0, neuro.PASS, caregiver.tick()) is not None
    assert neuro.answer(engine, CONFIG, TRACKING, step.check_id, 0, neuro.FAIL, caregiver.tick()) is None
    assert neuro.answer(engine, CONFIG, TRACKING, step.check_id, 5, neuro.PASS, caregiver.tick()) is None
    assert neuro.checks_of(engine, SENDER)[0]["answers"] == "p"


def test_stopped_abandoned_and_replaced_checks_do_not_count(engine: sa.engine.Engine) -> None:
    caregiver = Caregiver(engine)
    first = neuro.start(engine, CONFIG, CHAT, SENDER, caregiver.tick())
    neuro.answer(engine, CONFIG, TRACKING, first.check_id, 0, neuro.PASS, caregiver.tick())
    second = neuro.start(engine, CONFIG, CHAT, SENDER, caregiver.tick())  # a new /neurocheck replaces the open one
    expired = neuro.answer(engine, CONFIG, TRACKING, first.check_id, 1, neuro.PASS, caregiver.tick())
    assert expired is not None and expired.kind == "expired"
    stopped = neuro.answer(engine, CONFIG, TRACKING, second.check_id, 0, neuro.STOP, caregiver.tick())
    assert stopped is not None and stopped.kind == "stopped"
    late = neuro.start(engine, CONFIG, CHAT, SENDER, caregiver.tick())
    timed_out = neuro.answer(engine, CONFIG, TRACKING, late.check_id, 0, neuro.PASS, caregiver.tick(CONFIG.abandon_after_s + 1))
    assert timed_out is not None and timed_out.kind == "expired"
    assert [r["status"] for r in neuro.checks_of(engine, SENDER)] == ["abandoned", "stopped", "abandoned"]
    baseline = caregiver.check("f" + neuro.PASS * 9)  # nothing earlier counted: this is the baseline
    assert baseline is not None and baseline.kind == "complete" and baseline.baseline_score is None


def test_a_check_of_a_linked_chat_keeps_its_enrolment(engine: sa.engine.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(ENROLMENTS).values(code="CART9", label="Bed 9", therapy="tisagenlecleucel", created_by="a", created_at=0))
    link_chat(engine, "cart9", CHAT, SENDER, now=1.0)
    step = neuro.start(engine, CONFIG, CHAT, SENDER, 2.0)
    assert neuro.checks_of(engine, SENDER)[0]["code"] == "CART9" and step.kind == "question"


def test_callback_data_fits_telegram_and_parses_back() -> None:
    data = f"{neuro.PREFIX}{'a' * 12}:9:{neuro.FAIL}"
    assert len(data.encode()) <= 64 and neuro.parse(data) == ("a" * 12, 9, neuro.FAIL)
    assert neuro.parse("neuro:x:1:z") is None and neuro.parse("neuro:start") is None and neuro.parse("checkin:yes") is None


def test_a_broken_data_file_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "neuro.yml"
    bad.write_text('items:\n  - {id: year, name: the year, symptom: sneezing, ask: "What year"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown symptom"):
        neuro.load_neuro_config(str(bad))

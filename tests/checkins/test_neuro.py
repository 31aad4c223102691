"""The caregiver neuro check on a real SQLite file: the first complete check is the baseline, an item
right before and not right now escalates with that item, taps are counted once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.checkins import neuro
from bot.checkins.neuro_chat import NeuroChat
from bot.checkins.scheduler import link_chat
from bot.checkins.store import create_checkin_tables
from bot.clinic import alerts
from bot.clinic.schema import ENROLMENTS, WORKLIST
from bot.clinical.knowledge import load_knowledge_base
from bot.db import create_db_engine

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


def test_the_same_tap_again_gets_the_same_step_so_an_escalation_survives_a_crash(engine: sa.engine.Engine) -> None:
    """The relay may die between recording the tap and reporting it; its durable inbox replays the tap."""
    caregiver = Caregiver(engine)
    caregiver.check(ALL_RIGHT)
    step = neuro.start(engine, CONFIG, CHAT, SENDER, caregiver.tick())
    neuro.answer(engine, CONFIG, TRACKING, step.check_id, 0, neuro.PASS, caregiver.tick())
    first = neuro.answer(engine, CONFIG, TRACKING, step.check_id, 1, neuro.FAIL, caregiver.tick())
    again = neuro.answer(engine, CONFIG, TRACKING, step.check_id, 1, neuro.FAIL, caregiver.tick())
    assert first is not None and first.kind == "escalated" and again == first
    question = neuro.answer(engine, CONFIG, TRACKING, step.check_id, 0, neuro.PASS, caregiver.tick())
    assert question is None, "an earlier question's tap after the check ended says nothing"


def test_a_worse_answer_counts_however_late_and_the_clock_runs_from_the_last_answer(engine: sa.engine.Engine) -> None:
    caregiver = Caregiver(engine)
    caregiver.check(ALL_RIGHT)
    step = neuro.start(engine, CONFIG, CHAT, SENDER, caregiver.tick())
    for index in range(3):  # each answer just inside the limit: the check stays open past it in all
        asked = neuro.answer(engine, CONFIG, TRACKING, step.check_id, index, neuro.PASS, caregiver.tick(CONFIG.abandon_after_s - 1))
        assert asked is not None and asked.kind == "question"
    late = neuro.answer(engine, CONFIG, TRACKING, step.check_id, 3, neuro.FAIL, caregiver.tick(CONFIG.abandon_after_s * 3))
    assert late is not None and late.kind == "escalated" and late.newly_failed == "place"
    idle = neuro.start(engine, CONFIG, CHAT, SENDER, caregiver.tick())
    expired = neuro.answer(engine, CONFIG, TRACKING, idle.check_id, 0, neuro.PASS, caregiver.tick(CONFIG.abandon_after_s + 1))
    assert expired is not None and expired.kind == "expired"


def test_a_question_is_asked_from_the_check_s_own_items(engine: sa.engine.Engine) -> None:
    step = neuro.start(engine, CONFIG, CHAT, SENDER, 1.0)
    nxt = neuro.answer(engine, CONFIG, TRACKING, step.check_id, 0, neuro.PASS, 2.0)
    assert step.item_id == "year" and nxt is not None and nxt.item_id == "month" and nxt.index == 1


class Chat:
    """The caregiver's side of NeuroChat: what was sent, what went to the triage, in order."""

    def __init__(self, engine: sa.engine.Engine) -> None:
        self.log: list[tuple[str, object]] = []
        self.chat = NeuroChat(engine, TRACKING, CONFIG, self._answered)
        self.chat.send = self._send

    async def _send(self, chat_id: int, text: str, buttons: list[tuple[str, str]]) -> None:
        self.log.append(("say", (text, buttons)))

    async def _answered(self, chat_id: int) -> None:
        self.log.append(("answered", chat_id))

    async def _report(self, found: dict) -> None:
        self.log.append(("report", found))

    def run(self, verdicts: str, start: bool = True) -> None:
        async def go() -> None:
            if start:
                await self.chat.start(CHAT, SENDER)
            for verdict in verdicts:
                buttons = next(b for kind, b in reversed(self.log) if kind == "say" and b[1])[1]  # type: ignore[index]
                data = next(d for _, d in buttons if d.endswith(":" + verdict))
                await self.chat.button(CHAT, SENDER, data, self._report)

        asyncio.run(go())

    def said(self) -> list[str]:
        return [str(v[0]) for k, v in self.log if k == "say"]  # type: ignore[index]


def test_the_chat_asks_each_question_once_and_reports_before_it_explains(engine: sa.engine.Engine) -> None:
    chat = Chat(engine)
    chat.run("p" * 10)
    said = chat.said()
    assert "not a medical assessment" in said[0] and len(said) == 1 + 10 + 1 and "baseline" in said[-1]
    assert ("answered", CHAT) in chat.log, "the check-in that offered it is answered"
    data = [d for k, v in chat.log if k == "say" for _, d in v[1]]  # type: ignore[index]
    assert data and max(len(d.encode()) for d in data) <= 64, "Telegram's callback data limit"
    chat.log.clear()
    chat.run("ppf")
    kinds = [k for k, _ in chat.log]
    report = kinds.index("report")
    assert kinds[report + 1 :] == ["say"] and "call 911" in chat.said()[-1] and "the city" in chat.said()[-1]


def test_a_database_that_fails_still_gets_the_911_line(tmp_path: Path) -> None:
    broken = create_db_engine(f"sqlite:///{tmp_path / 'missing' / 'nowhere.db'}")
    chat = Chat(broken)
    chat.run("")
    assert chat.said() == [CONFIG.texts["unavailable"]] and "911" in chat.said()[0]
    asyncio.run(chat.chat.button(CHAT, SENDER, f"{neuro.PREFIX}abc:0:p", chat._report))
    assert chat.said()[-1] == CONFIG.texts["unavailable"]


def test_callback_data_parses_back_and_rejects_anything_else() -> None:
    assert neuro.parse(f"{neuro.PREFIX}{'a' * 12}:9:{neuro.FAIL}") == ("a" * 12, 9, neuro.FAIL)
    assert neuro.parse("neuro:x:1:z") is None and neuro.parse("neuro:start") is None and neuro.parse("checkin:yes") is None


def test_a_broken_data_file_fails_loudly(tmp_path: Path) -> None:
    bad = tmp_path / "neuro.yml"
    bad.write_text('items:\n  - {id: year, name: the year, symptom: sneezing, ask: "What year"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match="unknown symptom"):
        neuro.load_neuro_config(str(bad))

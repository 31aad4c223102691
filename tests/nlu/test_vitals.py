"""Vitals parser: units, keywords, and each threshold at, just below and just above."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from bot.clinical.knowledge import KnowledgeBase
from bot.nlu.vitals import VitalsParser


@pytest.fixture(scope="module")
def parser(kb: KnowledgeBase) -> VitalsParser:
    return VitalsParser(kb)


def one(parser: VitalsParser, text: str) -> tuple[str, float, str | None, str | None]:
    found = parser.parse(text)
    assert len(found) == 1, (text, found)
    v = found[0]
    return v.kind, v.value, v.symptom, v.assertion


@pytest.mark.parametrize(
    "text, kind, value, symptom, assertion",
    [
        ("Temperature 39.9 C", "temperature", 39.9, "high_fever", "present"),
        ("temp is 103.8 F", "temperature", 103.8, "high_fever", "present"),
        ("39,5°C", "temperature", 39.5, "high_fever", "present"),
        ("fever of 38.6", "temperature", 38.6, "fever", "present"),
        ("100.8 degrees", "temperature", 100.8, "fever", "present"),
        ("thermometer: 39.7", "temperature", 39.7, "high_fever", "present"),
        ("it's 39.8 now", "temperature", 39.8, "high_fever", "present"),
        ("temp 36.9", "temperature", 36.9, "fever", "absent"),
        ("my pulse is 130 at rest", "pulse", 130, "rapid_heartbeat", "present"),
        ("hr 135 bpm", "pulse", 135, "rapid_heartbeat", "present"),
        ("heart rate 72", "pulse", 72, None, None),  # a reading, not a denial (data/clinical.yml)
        ("BP 85/55", "blood_pressure", 85, "low_blood_pressure", "present"),
        ("pressure 79 over 48", "blood_pressure", 79, "low_blood_pressure", "present"),
        ("blood pressure 124/80", "blood_pressure", 124, None, None),
        ("SpO2 is 90%", "spo2", 90, "difficulty_breathing", "present"),
        ("Oxygen on my finger monitor keeps showing 87", "spo2", 87, "difficulty_breathing", "present"),
        ("my o2 is at 89 percent", "spo2", 89, "difficulty_breathing", "present"),
        ("sats 97%", "spo2", 97, None, None),
    ],
)
def test_reads_vital(parser: VitalsParser, text: str, kind: str, value: float, symptom: str | None, assertion: str | None) -> None:
    assert one(parser, text) == (kind, value, symptom, assertion)


@pytest.mark.parametrize(
    "text",
    ["I throw up 3 time today", "I had Kymriah 3 days ago", "took 2/3 of the tablets", "room 101", "I am 45 years old", ""],
)
def test_numbers_that_are_not_vitals(parser: VitalsParser, text: str) -> None:
    assert parser.parse(text) == []


def test_several_vitals_in_one_message(parser: VitalsParser) -> None:
    found = parser.parse("temp 37.1, pulse 88, bp 120/80, sats 97%")
    assert [v.kind for v in found] == ["temperature", "pulse", "blood_pressure", "spo2"]


def _thresholds(kb: KnowledgeBase) -> list[tuple[str, float, str, str]]:
    t = kb.thresholds
    f_high, f_fever = t["temperature"]["high_fever_f"], t["temperature"]["fever_f"]
    return [
        # (text template, threshold, symptom at/above (or below for low ones), direction)
        ("temperature {v} C", t["temperature"]["high_fever_c"], "high_fever", "ge"),
        ("temperature {v} C", t["temperature"]["fever_c"], "fever", "ge"),
        ("temperature {v} F", f_high, "high_fever", "ge"),
        ("temperature {v} F", f_fever, "fever", "ge"),
        ("pulse {v}", t["pulse"]["rapid_above"], "rapid_heartbeat", "gt"),
        ("blood pressure {v}/60", t["systolic"]["low_below"], "low_blood_pressure", "lt"),
        ("SpO2 {v}%", t["spo2"]["low_below"], "difficulty_breathing", "lt"),
    ]


def test_each_threshold_at_below_and_above(parser: VitalsParser, kb: KnowledgeBase) -> None:
    for template, limit, symptom, direction in _thresholds(kb):
        step = 0.1 if "temperature" in template else 1
        for value in (limit - step, limit, limit + step):
            value = round(value, 1)
            shown = f"{value:g}"
            found = [v for v in parser.parse(template.format(v=shown)) if v.symptom == symptom and v.assertion == "present"]
            expected = {"ge": value >= limit, "gt": value > limit, "lt": value < limit}[direction]
            assert bool(found) == expected, (template, shown)


def test_thresholds_come_from_the_knowledge_base(kb: KnowledgeBase) -> None:
    import dataclasses

    stricter = dataclasses.replace(kb, thresholds={**kb.thresholds, "spo2": {**kb.thresholds["spo2"], "low_below": 95}})
    assert VitalsParser(stricter).parse("SpO2 93%")[0].symptom == "difficulty_breathing"
    assert VitalsParser(kb).parse("SpO2 93%")[0].symptom is None


def test_a_reading_written_the_other_way_round(parser: VitalsParser) -> None:
    """Found by the property tests: "bp 40/60" was dropped as implausible; the higher number is systolic."""
    assert one(parser, "blood pressure 40/60") == ("blood_pressure", 60, "low_blood_pressure", "present")
    assert one(parser, "BP 80/120") == ("blood_pressure", 120, None, None)


def test_a_clinic_can_make_a_normal_pulse_or_pressure_deny_again(kb: KnowledgeBase) -> None:
    """Whether a normal reading is a denial is data: with `normal` ranges set, it is."""
    thresholds = {**kb.thresholds, "pulse": {**kb.thresholds["pulse"], "normal": [50, 100]}}
    thresholds["systolic"] = {**kb.thresholds["systolic"], "normal_from": 100}
    strict = VitalsParser(dataclasses.replace(kb, thresholds=thresholds))
    assert one(strict, "heart rate 72") == ("pulse", 72, "rapid_heartbeat", "absent")
    assert one(strict, "blood pressure 124/80") == ("blood_pressure", 124, "low_blood_pressure", "absent")


@pytest.mark.parametrize(
    ("text", "kind", "value", "symptom"),
    [
        ("top number in the 80s all evening", "blood_pressure", 80, "low_blood_pressure"),
        ("80-something on top", "blood_pressure", 80, "low_blood_pressure"),
        ("sys 87 dia 55", "blood_pressure", 87, "low_blood_pressure"),
        ("running 101-102 since lunch", "temperature", 102, "fever"),
        # a unit claims its number before the loose blood-pressure words can
        ("at first it was 103 F", "temperature", 103, "high_fever"),
    ],
)
def test_numbers_said_loosely(parser: VitalsParser, text: str, kind: str, value: float, symptom: str) -> None:
    assert [(v.kind, v.value, v.symptom) for v in parser.parse(text)] == [(kind, value, symptom)]


@pytest.mark.parametrize(
    "text, expected",
    [
        # (kind, value, unit, value_c, diastolic, role) per reading, kept with the message for the clinic's chart
        (
            "temp 102.5F, pulse 128 and bp 85/50, sat 89%",
            [
                ("temperature", 102.5, "F", 39.17, None, "measured"),
                ("pulse", 128.0, "/min", None, None, "measured"),
                ("blood_pressure", 85.0, "mmHg", None, 50.0, "measured"),
                ("spo2", 89.0, "%", None, None, "measured"),
            ],
        ),
        ("37.8 this morning, a bit warm", [("temperature", 37.8, "C", 37.8, None, "measured")]),
        ("what if it reaches 39.5?", [("temperature", 39.5, "C", 39.5, None, "hypothetical")]),
        ("bp 60/95", [("blood_pressure", 95.0, "mmHg", None, 60.0, "measured")]),
    ],
)
def test_every_reading_becomes_a_vital_entity_with_its_unit_and_context(text: str, expected: list[tuple], extractor: Any) -> None:
    from bot.nlu.rasa_component import findings_to_entities

    vitals = [e for e in findings_to_entities(extractor(text)) if e["entity"] == "vital"]
    assert [(e["kind"], e["value"], e["unit"], e["value_c"], e["diastolic"], e["role"]) for e in vitals] == expected
    assert all(text[e["start"] : e["end"]] == e["text"] for e in vitals)

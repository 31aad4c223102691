"""The worklist on a real SQLite file: items open from conversations, escalate once, and time."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from bot.clinic import alerts, indexer, queries, worklist
from bot.clinic.schema import ALERTS, EVENTS, rewind_events_mark

EMERGENCY_REASON = "lips blue → skin_discoloration → emergency (emergency symptom)"
URGENT_REASON = "38.5 °C → fever → urgent (mild symptom, on immunotherapy)"
CONFIG = alerts.AlertConfig(levels=("emergency", "urgent"), webhook_url="http://127.0.0.1:9/hook")


def say(engine: sa.engine.Engine, sender: str, at: float, level: str | None, reasons: list[str], test: bool = False) -> None:
    """One patient message and the slots the triage action set after it (only changed slots, as Rasa stores them)."""
    metadata = {"traffic": "test"} if test else {}
    rows = [("user", {"event": "user", "text": "…", "timestamp": at, "metadata": metadata, "parse_data": {"entities": []}})]
    if level:
        rows.append(("slot", {"event": "slot", "name": "triage_level", "value": level, "timestamp": at + 1}))
    if reasons:
        rows.append(("slot", {"event": "slot", "name": "triage_reasons", "value": reasons, "timestamp": at + 1}))
    with engine.begin() as conn:
        for type_name, data in rows:
            conn.execute(
                sa.insert(EVENTS).values(sender_id=sender, type_name=type_name, timestamp=data["timestamp"], data=json.dumps(data))
            )


def open_items(engine: sa.engine.Engine) -> list[worklist.Item]:
    return worklist.items(engine, "open")[0]


def test_an_emergency_opens_one_item_with_its_reason_and_one_alert_per_channel(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "a", now - 60, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    say(engine, "a", now - 30, None, [])  # "thanks": no slot changes
    indexer.refresh(engine, CONFIG.tracking)
    [item] = open_items(engine)
    assert (item.sender_id, item.level, item.reasons, item.status) == ("a", "emergency", [EMERGENCY_REASON], "open")
    assert item.opened_at == pytest.approx(now - 59)
    notices = alerts.due(engine)
    assert [(n["kind"], n["channel"], n["level"]) for n in notices] == [("alert", "webhook", "emergency")]


def test_a_higher_level_raises_the_open_item_and_restarts_its_clock(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "a", now - 600, "urgent", [URGENT_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [item] = open_items(engine)
    assert worklist.acknowledge(engine, item.id, "nurse1")
    say(engine, "a", now - 100, "emergency", [URGENT_REASON, EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [item] = open_items(engine)
    assert item.level == "emergency" and item.reasons == [URGENT_REASON, EMERGENCY_REASON]
    assert item.acked_at is None, "an emergency needs its own acknowledgement"
    assert item.level_at == pytest.approx(now - 99) and item.opened_at == pytest.approx(now - 599)
    assert sorted(n["level"] for n in alerts.due(engine)) == ["emergency", "urgent"]


def test_after_closing_a_new_emergency_reason_opens_a_new_item_but_an_old_one_does_not(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "a", now - 9000, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [first] = open_items(engine)
    worklist.close(engine, first.id, "nurse1", "sent_to_ed", "went to ED by ambulance")
    assert open_items(engine) == []
    say(engine, "a", now - 100, None, [EMERGENCY_REASON, URGENT_REASON])  # only an urgent reason is new
    indexer.refresh(engine, CONFIG.tracking)
    # urgent alerts in CONFIG, so a new urgent reason after closing opens an item at urgent
    [second] = open_items(engine)
    assert second.level == "urgent" and second.reasons == [URGENT_REASON]
    worklist.close(engine, second.id, "nurse1", "called_back", "")
    breathing = "can't breathe → difficulty_breathing → emergency (emergency symptom)"
    say(engine, "a", now - 50, None, [EMERGENCY_REASON, URGENT_REASON, breathing])
    indexer.refresh(engine, CONFIG.tracking)
    [third] = open_items(engine)
    assert third.level == "emergency" and third.reasons == [breathing] and third.id not in (first.id, second.id)


def test_levels_that_do_not_alert_open_nothing(engine: sa.engine.Engine) -> None:
    only_emergency = alerts.AlertConfig(levels=("emergency",))
    say(engine, "a", time.time(), "urgent", [URGENT_REASON])
    indexer.refresh(engine, only_emergency.tracking)
    assert open_items(engine) == [] and alerts.due(engine) == []


def test_test_traffic_opens_no_item_sends_nothing_and_is_hidden(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "eval-1", now, "emergency", [EMERGENCY_REASON], test=True)
    say(engine, "patient", now, "monitor", [])
    indexer.refresh(engine, CONFIG.tracking)
    assert open_items(engine) == [] and alerts.due(engine) == []
    rows, total = queries.list_conversations(engine, queries.Filters())
    assert [r.sender_id for r in rows] == ["patient"] and total == 1
    assert queries.level_counts(engine, now)["today"]["emergency"] == 0
    assert [r.sender_id for r in queries.list_conversations(engine, queries.Filters(traffic="test"))[0]] == ["eval-1"]


def test_an_unacknowledged_item_escalates_once_per_level_and_an_acknowledged_one_never(engine: sa.engine.Engine) -> None:
    now = time.time()
    config = alerts.AlertConfig(levels=("emergency",), webhook_url="http://a/hook", escalation_chat_id="-1", telegram_token="1:x")
    say(engine, "a", now - 3600, "emergency", [EMERGENCY_REASON])
    say(engine, "b", now - 3600, "emergency", [EMERGENCY_REASON])
    say(engine, "c", now - 60, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, config.tracking)
    by_sender = {i.sender_id: i for i in open_items(engine)}
    worklist.acknowledge(engine, by_sender["b"].id, "nurse1")
    minutes = {"emergency": 10.0}
    assert worklist.escalate_due(engine, minutes, config.escalation_channels, now) == [by_sender["a"].id]
    assert worklist.escalate_due(engine, minutes, config.escalation_channels, now + 3600) == [by_sender["c"].id]
    assert worklist.escalate_due(engine, minutes, config.escalation_channels, now + 7200) == []
    with engine.connect() as conn:
        escalations = conn.execute(sa.select(ALERTS.c.item_id, ALERTS.c.channel).where(ALERTS.c.kind == "escalation")).all()
    assert sorted(escalations) == sorted([(by_sender["a"].id, "escalation-telegram"), (by_sender["c"].id, "escalation-telegram")])


def test_escalation_without_a_second_channel_goes_to_the_first_again() -> None:
    config = alerts.AlertConfig(levels=("emergency",), webhook_url="http://a/hook")
    assert config.escalation_channels == ["webhook"]
    assert config.destination("webhook") == ("webhook", "http://a/hook")


def test_close_requires_an_outcome_acknowledges_and_cannot_close_twice(engine: sa.engine.Engine) -> None:
    say(engine, "a", time.time() - 120, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [item] = open_items(engine)
    with pytest.raises(worklist.WorklistError):
        worklist.close(engine, item.id, "nurse1", "made-up", "")
    worklist.close(engine, item.id, "nurse1", "advised_come_in", "  coming in at 9  ")
    done = worklist.item(engine, item.id)
    assert done is not None and done.status == "closed" and done.acked_by == "nurse1" and done.note == "coming in at 9"
    assert done.outcome_label == "Advised to come in"
    assert not worklist.acknowledge(engine, item.id, "nurse2")
    with pytest.raises(worklist.WorklistError):
        worklist.close(engine, item.id, "nurse2", "no_action", "")


def test_open_items_sort_first_most_severe_then_longest_waiting(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "urgent-old", now - 900, "urgent", [URGENT_REASON])
    say(engine, "emergency-new", now - 60, "emergency", [EMERGENCY_REASON])
    say(engine, "emergency-old", now - 600, "emergency", [EMERGENCY_REASON])
    say(engine, "closed", now - 5000, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    closed = next(i for i in open_items(engine) if i.sender_id == "closed")
    worklist.close(engine, closed.id, "n", "no_action", "")
    everything, total = worklist.items(engine, "all")
    assert [i.sender_id for i in everything] == ["emergency-old", "emergency-new", "urgent-old", "closed"] and total == 4
    assert [i.sender_id for i in worklist.items(engine, "open", level="urgent")[0]] == ["urgent-old"]


def test_response_times_are_percentiles_per_level_and_window(engine: sa.engine.Engine) -> None:
    now = time.time()
    for n in range(5):
        say(engine, f"p{n}", now - 3 * 86400, "emergency", [EMERGENCY_REASON])
    say(engine, "old", now - 20 * 86400, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    for item in worklist.items(engine, "all")[0]:
        minutes = 30 if item.sender_id == "old" else 2 * (int(item.sender_id[1]) + 1)
        worklist.acknowledge(engine, item.id, "n", now=item.opened_at + minutes * 60)
        if item.sender_id != "p4":
            worklist.close(engine, item.id, "n", "called_back", "", now=item.opened_at + 2 * minutes * 60)
    table = {(r["level"], r["days"]): r for r in worklist.response_times(engine, ["emergency"], now=now)}
    week, month = table[("emergency", 7)], table[("emergency", 30)]
    assert (week["items"], week["open"]) == (5, 1) and month["items"] == 6
    assert week["ack_p50"] == pytest.approx(6 * 60) and week["ack_p90"] == pytest.approx(9.2 * 60)
    assert week["close_p50"] == pytest.approx(10 * 60), "over the four closed: 4, 8, 12, 16 min"
    assert month["ack_p50"] == pytest.approx(7 * 60)


def test_escalate_after_parses_per_level_or_one_number() -> None:
    assert worklist.parse_escalate_after(None)["emergency"] == 10 and worklist.parse_escalate_after("")["urgent"] == 60
    assert worklist.parse_escalate_after("5") == {"emergency": 5, "urgent": 5, "monitor": 5}
    assert worklist.parse_escalate_after("emergency=3")["emergency"] == 3
    for bad in ("emergncy=3", "emergency=x", "emergency=0"):
        with pytest.raises(ValueError):
            worklist.parse_escalate_after(bad)


def test_reason_level_reads_the_level_a_reason_ends_with() -> None:
    assert worklist.reason_level(EMERGENCY_REASON) == "emergency"
    assert worklist.reason_level("feels worse → urgent (feels worse, no symptom named)") == "urgent"
    assert worklist.reason_level("no arrow here") is None


def test_duration_reads_like_a_nurse_says_it() -> None:
    assert [worklist.duration(s) for s in (None, 12, 600, 3 * 3600 + 300, 3 * 86400 + 7200)] == [
        "–",
        "12 s",
        "10 min",
        "3 h 5 min",
        "3 d 2 h",
    ]


# ---------------------------------------------------------------------- what the review found
def test_the_same_emergency_reported_again_after_closing_opens_a_new_item(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "a", now - 3600, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [first] = open_items(engine)
    worklist.close(engine, first.id, "nurse1", "advised_come_in", "")
    # "I still can't breathe": the same symptom, so the triage slots do not change at all
    entity = {"entity": "symptom", "value": "difficulty_breathing", "role": "present", "text": "can't breathe"}
    user = {"event": "user", "text": "I still can't breathe", "timestamp": now, "parse_data": {"entities": [entity]}}
    with engine.begin() as conn:
        conn.execute(sa.insert(EVENTS).values(sender_id="a", type_name="user", timestamp=now, data=json.dumps(user)))
    indexer.refresh(engine, CONFIG.tracking)
    [again] = open_items(engine)
    assert again.level == "emergency" and again.id != first.id and "can't breathe" in again.reasons[0]
    assert [n["item_id"] for n in alerts.due(engine) if n["kind"] == "alert"].count(again.id) == 1, "and it alerts"


def test_a_nurse_acting_on_an_out_of_date_page_is_told_to_look_again(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "a", now - 600, "urgent", [URGENT_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [item] = open_items(engine)
    say(engine, "a", now - 60, "emergency", [URGENT_REASON, EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    with pytest.raises(worklist.WorklistError, match="raised to emergency"):
        worklist.close(engine, item.id, "nurse1", "no_action", "", level="urgent")
    with pytest.raises(worklist.WorklistError, match="raised to emergency"):
        worklist.acknowledge(engine, item.id, "nurse1", level="urgent")
    assert open_items(engine)[0].status == "open"
    worklist.close(engine, item.id, "nurse1", "sent_to_ed", "", level="emergency")
    with pytest.raises(worklist.WorklistError):
        worklist.close(engine, item.id, "nurse2", "no_action", "", level="emergency")


def test_handled_items_cancel_their_undelivered_notices(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "a", now - 3600, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [item] = open_items(engine)
    worklist.escalate_due(engine, {"emergency": 10.0}, ["webhook"], now)
    assert sorted(n["kind"] for n in alerts.due(engine, now + 5)) == ["alert", "escalation"]
    worklist.acknowledge(engine, item.id, "nurse1")
    assert [n["kind"] for n in alerts.due(engine, now + 5)] == ["alert"], "on-call is not paged for an item someone owns"
    worklist.close(engine, item.id, "nurse1", "called_back", "")
    assert alerts.due(engine, now + 5) == []


def test_without_any_channel_nothing_is_marked_escalated(engine: sa.engine.Engine) -> None:
    say(engine, "a", time.time() - 3600, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, alerts.AlertConfig(levels=("emergency",)).tracking)
    assert worklist.escalate_due(engine, {"emergency": 10.0}, []) == []
    assert open_items(engine)[0].escalated_at is None


def test_time_to_acknowledge_counts_from_when_the_item_reached_its_level(engine: sa.engine.Engine) -> None:
    now = time.time()
    say(engine, "a", now - 7200, "urgent", [URGENT_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    say(engine, "a", now - 120, "emergency", [URGENT_REASON, EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    [item] = open_items(engine)
    worklist.acknowledge(engine, item.id, "nurse1", now=item.level_at + 60)
    row = next(r for r in worklist.response_times(engine, ["emergency"], now=now) if r["days"] == 7)
    assert row["ack_p50"] == pytest.approx(60), "60 s after the emergency, not two hours after the first urgent message"


def test_a_malformed_event_does_not_stop_the_indexing(engine: sa.engine.Engine) -> None:
    now = time.time()
    bad = {"event": "slot", "name": "symptoms", "value": 5, "timestamp": now}
    with engine.begin() as conn:
        conn.execute(sa.insert(EVENTS).values(sender_id="broken", type_name="slot", timestamp=now, data=json.dumps(bad)))
    say(engine, "a", now, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    assert [i.sender_id for i in open_items(engine)] == ["a"]


def test_the_indexer_waits_for_an_event_id_still_being_committed(engine: sa.engine.Engine) -> None:
    rows = [type("Row", (), {"id": i})() for i in (5, 6, 8, 9)]
    assert [r.id for r in indexer._contiguous(rows, 4, now=100.0)] == [5, 6], "7 may still be committing"
    later = rows[2:]  # what the next rounds read: the rows above the mark
    assert [r.id for r in indexer._contiguous(later, 6, now=105.0)] == [], "still waiting"
    waited = 100.0 + indexer.GAP_WAIT_S + 1
    assert [r.id for r in indexer._contiguous(later, 6, now=waited)] == [8, 9], "a rolled-back id is skipped at last"


def test_deleting_the_newest_events_does_not_hide_the_next_ones(engine: sa.engine.Engine) -> None:
    """SQLite reuses the ids of deleted newest rows: the mark must come back with them (/forget)."""
    now = time.time()
    say(engine, "kept", now - 60, None, [])
    say(engine, "forgotten", now - 30, None, [])
    indexer.refresh(engine, CONFIG.tracking)
    with engine.begin() as conn:
        conn.execute(sa.delete(EVENTS).where(EVENTS.c.sender_id == "forgotten"))
        rewind_events_mark(conn)
    say(engine, "next", now, "emergency", [EMERGENCY_REASON])
    indexer.refresh(engine, CONFIG.tracking)
    assert [i.sender_id for i in open_items(engine)] == ["next"]

"""Chat with the real Rasa server + action server over the REST channel."""

from __future__ import annotations

import sqlite3
import uuid

import pytest
import requests

from bot.servers import Stack
from tools.evaluate import RestClient

pytestmark = pytest.mark.integration


def sender() -> str:
    return f"it-{uuid.uuid4().hex[:12]}"


def texts(answer: list[dict]) -> str:
    return "\n".join(m.get("text", "") for m in answer)


def test_emergency_first_reply_has_911(client: RestClient) -> None:
    answer = client.send(sender(), "I had CAR-T last week and now I can't catch my breath")
    assert "911" in answer[0]["text"]


def test_answering_the_drug_question_with_an_emergency(client: RestClient) -> None:
    sid = sender()
    first = texts(client.send(sid, "I have a headache"))
    assert "care team" in first
    client.send(sid, "no")  # no to the emergency screen → asked about immunotherapy
    answer = texts(client.send(sid, "now I can't breathe"))
    assert "911" in answer
    slots = client.tracker(sid)["slots"]
    assert slots["triage_level"] == "emergency"
    assert set(slots["symptoms"]) == {"headache", "difficulty_breathing"}
    assert any("difficulty_breathing → emergency" in r for r in slots["triage_reasons"])


def test_yes_to_emergency_screen_escalates(client: RestClient) -> None:
    sid = sender()
    answer = client.send(sid, "I feel a bit tired")
    assert any(b["payload"] == "/affirm" for m in answer for b in m.get("buttons", []))
    assert "911" in texts(client.send(sid, "/affirm"))
    assert client.tracker(sid)["slots"]["triage_level"] == "emergency"


def test_therapy_slots(client: RestClient) -> None:
    sid = sender()
    client.send(sid, "I had Kymriah 3 days ago")
    slots = client.tracker(sid)["slots"]
    assert slots["on_immunotherapy"] is True and "Kymriah" in slots["therapy"] and slots["therapy_when"] == "3 days ago"


def test_faq_and_fallback_keep_safety_line(client: RestClient) -> None:
    assert "cytokine" in texts(client.send(sender(), "what is CRS?")).lower()
    assert "911" in texts(client.send(sender(), "what's the weather in Paris tomorrow"))


@pytest.mark.parametrize(
    "message",
    ["", "   ", "🙂🙂🙂", "Tengo fiebre y mucha tos", "<script>alert('x')</script>", "'; DROP TABLE events; --", "39", "asdkjh qwe zxc"],
)
def test_bad_input_gets_a_clear_reply(client: RestClient, message: str) -> None:
    answer = client.send(sender(), message)
    assert answer, "never silent"
    assert all(m.get("text") for m in answer)


def test_huge_message_with_buried_emergency(client: RestClient) -> None:
    filler = "Yesterday we walked to the park and had lunch with the family. " * 150
    message = (filler + " Since an hour I am struggling to breathe. " + filler)[:20_000]
    answer = client.send(sender(), message)
    assert "911" in texts(answer)


@pytest.mark.parametrize("body", [b"{not json", b"[]", b'{"sender": "x"}', b'{"sender": 5, "message": "hi"}'])
def test_malformed_body_is_a_400_with_a_json_error(stack: Stack, body: bytes) -> None:
    url = f"{stack.settings.rasa_url}/webhooks/rest/webhook"
    r = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400 and "sender" in r.json()["error"]


def test_api_needs_the_token(stack: Stack) -> None:
    r = requests.get(f"{stack.settings.rasa_url}/conversations/x/tracker", params={"token": "wrong"}, timeout=10)
    assert r.status_code == 401


def test_restart_command_starts_over(client: RestClient) -> None:
    sid = sender()
    client.send(sid, "I fainted")
    client.send(sid, "/restart")
    assert client.tracker(sid)["slots"]["triage_level"] == "none"


def test_rasa_restart_loses_nothing(stack: Stack, client: RestClient) -> None:
    sid = sender()
    client.send(sid, "I had Kymriah 4 days ago")
    client.send(sid, "I have a fever of 38.4")
    before = client.tracker(sid)
    db = stack.settings.database_url.removeprefix("sqlite:///")
    rows_before = sqlite3.connect(db).execute("select count(*) from events where sender_id = ?", (sid,)).fetchone()[0]
    stack.stop_one("rasa")
    stack.start_rasa()
    after = client.tracker(sid)
    assert after["slots"]["symptoms"] == before["slots"]["symptoms"] == ["fever"]
    assert after["slots"]["therapy"] == before["slots"]["therapy"]
    rows_after = sqlite3.connect(db).execute("select count(*) from events where sender_id = ?", (sid,)).fetchone()[0]
    assert rows_after == rows_before > 0
    answer = texts(client.send(sid, "and now I'm confused"))
    assert "911" in answer
    slots = client.tracker(sid)["slots"]
    assert slots["symptoms"] == ["fever", "confusion"] and slots["triage_level"] == "emergency"


def test_action_server_down_still_gives_safe_replies(stack: Stack, client: RestClient) -> None:
    sid = sender()
    client.send(sid, "I had Kymriah 2 days ago")
    stack.stop_one("actions")
    try:
        emergency = texts(client.send(sid, "now I can't breathe"))
        assert "911" in emergency and "emergency" in emergency.lower()
        other = texts(client.send(sender(), "I have a headache"))
        assert "911" in other and "care team" in other
    finally:
        stack.start_actions()
    # back up: the conversation continues and is triaged with what is known
    answer = texts(client.send(sid, "and my lips look blue"))
    assert "911" in answer
    slots = client.tracker(sid)["slots"]
    assert slots["triage_level"] == "emergency" and "skin_discoloration" in slots["symptoms"]
    events = client.tracker(sid)["events"]
    assert any(e.get("event") == "user" and e.get("text") == "now I can't breathe" for e in events), "the message was kept"

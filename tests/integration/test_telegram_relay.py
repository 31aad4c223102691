"""The Telegram relay end to end: real python-telegram-bot (in the relay process), real Rasa and
action servers, and a fake Telegram Bot API server (the only fake: Telegram's side)."""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import socket
import sqlite3
import threading
import time
from pathlib import Path

import pytest
import requests

from bot.clinic.labels import pseudonym
from bot.servers import Stack, free_port
from bot.telegram.handlers import FORGET_YES
from tests.integration.conftest import BOT_TOKEN, RelayRig, relay_settings, wait_until
from tools.fake_bot_api import FakeTelegram, Sent

pytestmark = pytest.mark.integration
_chats = itertools.count(1000)


def new_chat() -> int:
    return next(_chats)


def user_texts(rig: RelayRig, chat_id: int) -> list[str]:
    return [e["text"] for e in rig.tracker(chat_id)["events"] if e.get("event") == "user"]


def has_911(call: Sent) -> bool:
    return "911" in call.params.get("text", "")


def test_emergency_message_gets_911_first(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "my husband cant breath properly and his lips look blue")
    first = relay.fake.wait_sent(chat, 1)[0]
    assert "911" in first.params["text"]
    assert user_texts(relay, chat) == ["my husband cant breath properly and his lips look blue"]


def test_an_update_sent_twice_is_handled_once(relay: RelayRig) -> None:
    chat = new_chat()
    update_id = relay.fake.push_text(chat, "I have a mild headache since this morning")
    relay.fake.wait_sent(chat, 1)
    relay.fake.redeliver(update_id)  # Telegram's retry, possibly to another relay instance
    relay.fake.push_text(chat, "thanks")  # handled after the copy, so the copy had its chance
    wait_until(lambda: "thanks" in user_texts(relay, chat), what="the next message in Rasa")
    assert user_texts(relay, chat) == ["I have a mild headache since this morning", "thanks"]


def test_update_ids_that_start_again_lose_no_message(relay: RelayRig) -> None:
    """Telegram restarts update ids after a week without updates (and a restarted Bot API
    server may too): claims keyed on update ids dropped every new message, unanswered."""
    chat = new_chat()
    first = ["hello", "I have a mild headache", "thanks"]
    second = ["my heart is racing", "and I feel dizzy", "ok"]
    for batch in (first, second):
        relay.fake.restart_update_ids(1)
        before = len(relay.fake.sent(chat))
        for line in batch:
            relay.fake.push_text(chat, line)
        relay.fake.wait_sent(chat, before + len(batch))
    wait_until(lambda: user_texts(relay, chat) == first + second, what="all six messages in Rasa, in order")
    time.sleep(1.0)
    assert len(relay.fake.sent(chat)) == 6, "each message answered once"
    assert "911" in relay.fake.sent(chat)[3].params["text"]


def test_relay_killed_at_random_points_loses_nothing(stack: Stack, tmp_path: Path) -> None:
    """SIGKILL the relay three times while four patients write: every message reaches Rasa once,
    in its chat's order, and gets an answer; the emergencies get 911."""
    fake = FakeTelegram(token=BOT_TOKEN).start()
    settings = relay_settings(stack, fake, tmp_path, telegram_api_base_url=f"{fake.base_url}/bot")  # SPEC's form of the URL
    relay_stack = Stack(settings, log_dir=tmp_path)
    rig = RelayRig(fake, relay_stack, settings)
    rng = random.Random(2026)
    chats = [new_chat() for _ in range(4)]
    script = ["hello", "I had Kymriah 3 days ago", "I have a fever of 38.7", "now my lips look blue", "and I feel confused", "thanks"]
    try:
        relay_stack.start_relay()

        def patients() -> None:
            for line in script:
                for chat in chats:
                    fake.push_text(chat, line)
                time.sleep(rng.uniform(0.2, 0.8))

        writer = threading.Thread(target=patients)
        writer.start()
        for _ in range(3):
            time.sleep(rng.uniform(0.2, 1.5))
            relay_stack.kill("relay")
            relay_stack.start_relay()
        writer.join()
        for chat in chats:
            wait_until(lambda chat=chat: user_texts(rig, chat) == script, timeout=90, what=f"chat {chat} in Rasa once, in order")
            wait_until(lambda chat=chat: len(fake.sent(chat)) >= len(script), timeout=30, what=f"chat {chat} answered")
            assert any(has_911(c) for c in fake.sent(chat)[3:]), "the emergency got 911"
        wait_until(lambda: fake.unconfirmed() == 0, timeout=15, what="every update confirmed to Telegram")
    finally:
        relay_stack.stop()
        fake.stop()


def test_a_reply_held_up_by_telegram_gets_no_extra_fail_safe(relay: RelayRig) -> None:
    """Rasa answered in time, Telegram is slow to take the reply: a fail-safe would queue behind
    it and double the sends (after an outage the backlog then never drains: found by make chaos)."""
    chat = new_chat()
    relay.fake.slow_next("sendMessage", relay.settings.relay_rasa_timeout + 1)  # within the HTTP timeout (5 s)
    relay.fake.push_text(chat, "I have a mild headache since this morning")
    relay.fake.wait_sent(chat, 1, timeout=30)
    time.sleep(relay.settings.relay_rasa_timeout + 1)
    assert len(relay.fake.sent(chat)) == 1, [c.params["text"][:40] for c in relay.fake.sent(chat)]


def test_button_tap_reaches_rasa_as_payload_and_clears_keyboard(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "I have a fever of 38.5")
    question = relay.fake.wait_for(chat, lambda c: bool(c.params.get("reply_markup")))
    buttons = question.params["reply_markup"]["inline_keyboard"][0]
    yes = next(b for b in buttons if b["text"] == "Yes")
    before = len(relay.fake.sent(chat))
    query_id = relay.fake.push_callback(chat, question, yes["callback_data"])
    relay.fake.wait_for(chat, lambda c: True, after=before)
    cleared = relay.fake.wait_for(chat, lambda c: c.params.get("message_id") == question.message_id, method="editMessageReplyMarkup")
    assert not cleared.params.get("reply_markup")
    answered = [c.params.get("callback_query_id") for c in relay.fake.sent(None, "answerCallbackQuery")]
    assert query_id in answered, "the button spinner is stopped"
    wait_until(lambda: yes["callback_data"] in user_texts(relay, chat), what="payload stored in Rasa")
    assert yes["callback_data"].startswith("/")


def test_two_chats_interleave_without_mixing(relay: RelayRig) -> None:
    a, b = new_chat(), new_chat()
    a_msgs = ["I had Kymriah 3 days ago", "I have a headache", "now I feel confused"]
    b_msgs = ["hello", "I have a mild rash", "thanks"]
    for ma, mb in zip(a_msgs, b_msgs, strict=True):
        relay.fake.push_text(a, ma)
        relay.fake.push_text(b, mb)
    wait_until(lambda: len(user_texts(relay, a)) == 3 and len(user_texts(relay, b)) == 3, what="all six messages in Rasa")
    assert user_texts(relay, a) == a_msgs, "chat A in order, nothing from B"
    assert user_texts(relay, b) == b_msgs, "chat B in order, nothing from A"
    relay.fake.wait_for(a, lambda c: "🚨" in c.params["text"])
    slots_a, slots_b = relay.tracker(a)["slots"], relay.tracker(b)["slots"]
    assert slots_a["triage_level"] == "emergency" and set(slots_a["symptoms"]) == {"headache", "confusion"}
    assert slots_b["triage_level"] == "urgent" and slots_b["symptoms"] == ["rash"]
    assert not any("🚨" in c.params["text"] or "Kymriah" in c.params["text"] for c in relay.fake.sent(b)), "no reply of A went to B"


def test_start_with_code_passes_metadata_and_explains_the_bot(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "/start ENROL-77")
    texts = [c.params["text"] for c in relay.fake.wait_sent(chat, 2)]
    assert "911" in texts[0] and "not a diagnosis" in texts[0]
    assert "/forget" in texts[1] and "stored" in texts[1]
    user = next(e for e in relay.tracker(chat)["events"] if e.get("event") == "user")
    assert user["metadata"]["telegram"]["enrolment_code"] == "ENROL-77"
    assert str(chat) not in json.dumps(relay.tracker(chat)), "the raw Telegram id is not stored"


def test_help_emergency_and_unknown_commands(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "/emergency")
    assert "911" in relay.fake.wait_sent(chat, 1)[0].params["text"]
    relay.fake.push_text(chat, "/help")
    assert "/restart" in relay.fake.wait_sent(chat, 2)[1].params["text"]
    relay.fake.push_text(chat, "/frobnicate")
    assert "/help" in relay.fake.wait_sent(chat, 3)[2].params["text"]


@pytest.mark.parametrize("kind", ["photo", "voice", "sticker", "location", "document"])
def test_non_text_gets_a_polite_text_only_reply(relay: RelayRig, kind: str) -> None:
    chat = new_chat()
    relay.fake.push_media(chat, kind)
    reply = relay.fake.wait_sent(chat, 1)[0].params["text"]
    assert "only read text" in reply and "911" in reply


def test_edited_message_is_a_new_message(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "I feel ok")
    relay.fake.wait_sent(chat, 1)
    relay.fake.push_edited(chat, 1, "I feel ok but I fainted")
    relay.fake.wait_for(chat, has_911)
    wait_until(lambda: user_texts(relay, chat) == ["I feel ok", "I feel ok but I fainted"], what="both versions in Rasa")


def test_restart_starts_a_new_conversation(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "I fainted")
    relay.fake.wait_for(chat, has_911)
    relay.fake.push_text(chat, "/restart")
    wait_until(lambda: relay.tracker(chat)["slots"]["triage_level"] in (None, "none"), what="slots reset")


def test_forget_deletes_the_rows_after_confirmation(relay: RelayRig) -> None:
    chat = new_chat()
    words = f"I have a headache since the qx{chat}zq party"
    relay.fake.push_text(chat, words)
    relay.fake.wait_sent(chat, 1)
    db = relay.settings.database_url.removeprefix("sqlite:///")
    count = "select count(*) from events where sender_id = ?"
    wait_until(lambda: sqlite3.connect(db).execute(count, (relay.sender(chat),)).fetchone()[0] > 0, what="rows stored")
    before = len(relay.fake.sent(chat))
    relay.fake.push_text(chat, "/forget")
    confirm = relay.fake.wait_for(chat, lambda c: bool(c.params.get("reply_markup")), after=before)
    assert sqlite3.connect(db).execute(count, (relay.sender(chat),)).fetchone()[0] > 0, "nothing deleted before confirming"
    relay.fake.push_callback(chat, confirm, FORGET_YES)
    done = relay.fake.wait_for(chat, lambda c: "deleted" in c.params.get("text", ""), after=before + 1)
    assert "Done" in done.params["text"]
    assert sqlite3.connect(db).execute(count, (relay.sender(chat),)).fetchone()[0] == 0
    clinic_db = sqlite3.connect(db)
    assert clinic_db.execute("select count(*) from clinic_conversations where sender_id = ?", (relay.sender(chat),)).fetchone()[0] == 0
    trace = clinic_db.execute("select target, detail from clinic_audit where action = 'forget'").fetchall()
    assert (pseudonym(relay.sender(chat)), "") in trace, "the deletion is recorded under the pseudonym, without content"
    files = [f for f in Path(db).parent.glob(Path(db).name + "*") if f.is_file()]
    assert Path(db) in files
    assert [f.name for f in files if f"qx{chat}zq".encode() in f.read_bytes()] == [], "no copy left in the database files"


def test_telegram_retry_after_is_waited_out(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.fail_next("sendMessage", status=429, retry_after=1)
    relay.fake.push_text(chat, "I have chest pain")
    first = relay.fake.wait_sent(chat, 1, timeout=20)[0]
    assert "911" in first.params["text"]


def test_telegram_network_errors_are_retried(relay: RelayRig) -> None:
    chat = new_chat()
    relay.fake.fail_next("sendMessage", status=502, times=2)
    relay.fake.push_text(chat, "I have a seizure")
    assert "911" in relay.fake.wait_sent(chat, 1, timeout=20)[0].params["text"]


def test_logs_carry_no_message_text_and_no_token(relay: RelayRig) -> None:
    chat = new_chat()
    secret_words = "my neighbour Zebedee-Quux says hello"
    relay.fake.push_text(chat, secret_words)
    relay.fake.wait_sent(chat, 1)
    time.sleep(0.3)
    log = (relay.stack.log_dir / "relay.log").read_text()
    assert "relay.answered" in log
    assert "Zebedee" not in log
    assert BOT_TOKEN not in log and BOT_TOKEN.split(":")[1] not in log
    assert str(relay.settings.rasa_api_token) not in log


def test_rasa_down_gives_fail_safe_then_message_reaches_rasa(relay: RelayRig, stack: Stack) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "hi")
    relay.fake.wait_sent(chat, 1)
    stack.stop_one("rasa")
    try:
        t0 = time.monotonic()
        relay.fake.push_text(chat, "I can't breathe")
        failsafe = relay.fake.wait_sent(chat, 2, timeout=relay.settings.relay_rasa_timeout + 5)[1]
        assert time.monotonic() - t0 < relay.settings.relay_rasa_timeout + 2
        assert "911" in failsafe.params["text"] and "kept" in failsafe.params["text"]
        relay.fake.push_text(chat, "also a headache")
        second = relay.fake.wait_sent(chat, 3, timeout=relay.settings.relay_rasa_timeout + 5)[2]
        assert "911" in second.params["text"] and "care team" in second.params["text"]
    finally:
        stack.start_rasa()
    wait_until(
        lambda: user_texts(relay, chat) == ["hi", "I can't breathe", "also a headache"],
        timeout=30,
        what="parked messages delivered in order",
    )
    late = relay.fake.wait_for(chat, lambda c: c.params.get("reply_parameters") is not None and has_911(c), timeout=30)
    assert late.params["reply_parameters"]["message_id"] > 0, "the late answer is threaded to the patient's message"


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_webhook_mode_checks_the_secret(stack: Stack, tmp_path: Path) -> None:
    fake = FakeTelegram(token=BOT_TOKEN).start()
    port = free_port()
    settings = relay_settings(stack, fake, tmp_path, telegram_webhook_url=f"http://127.0.0.1:{port}/tg-hook", telegram_webhook_port=port)
    relay_stack = Stack(settings, log_dir=tmp_path)
    try:
        relay_stack.start_relay()
        # "relay.ready" is logged in post_init, before python-telegram-bot's updater sets the webhook
        wait_until(lambda: bool(fake.sent(None, "setWebhook")), timeout=15, what="setWebhook called")
        assert fake.sent(None, "setWebhook")[-1].params["url"].endswith("/tg-hook")
        wait_until(lambda: listening(port), timeout=15, what="webhook server listening")  # it starts after setWebhook
        update = {"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 5, "type": "private"}, "text": "hi"}}
        url = f"http://127.0.0.1:{port}/tg-hook"
        assert requests.post(url, json=update, timeout=5).status_code == 403
        wrong = {"X-Telegram-Bot-Api-Secret-Token": "not-the-secret"}
        assert requests.post(url, json=update, headers=wrong, timeout=5).status_code == 403
        # Through the fake (which sends the registered secret) the message is served.
        chat = 77
        fake.push_text(chat, "I fainted this morning")
        assert "911" in fake.wait_sent(chat, 1)[0].params["text"]
    finally:
        relay_stack.stop()
        fake.stop()


def test_frozen_rasa_gives_fail_safe_in_time_then_the_real_answer_once(relay: RelayRig, stack: Stack) -> None:
    chat = new_chat()
    relay.fake.push_text(chat, "hello")
    relay.fake.wait_sent(chat, 1)
    rasa = stack.procs["rasa"]
    os.kill(rasa.pid, signal.SIGSTOP)  # Rasa hangs: accepts connections, answers nothing
    try:
        t0 = time.monotonic()
        relay.fake.push_text(chat, "my heart is racing")
        failsafe = relay.fake.wait_sent(chat, 2, timeout=relay.settings.relay_rasa_timeout + 5)[1]
        assert time.monotonic() - t0 < relay.settings.relay_rasa_timeout + 2
        assert "911" in failsafe.params["text"]
        assert "can be an emergency" in failsafe.params["text"], "the relay itself recognised an emergency sign"
        assert relay.fake.sent(chat, "sendChatAction"), "typing… shows while Rasa works"
    finally:
        os.kill(rasa.pid, signal.SIGCONT)
    late = relay.fake.wait_for(chat, lambda c: "🚨" in c.params["text"] and c.params.get("reply_parameters") is not None, timeout=30)
    assert late.params["reply_parameters"]["message_id"] > 0
    wait_until(lambda: user_texts(relay, chat) == ["hello", "my heart is racing"], what="stored once")
    time.sleep(relay.settings.relay_rasa_timeout)
    assert user_texts(relay, chat) == ["hello", "my heart is racing"], "not processed twice"


def post_relay(stack: Stack, body: object, token: str | None, path: str = "webhook") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    url = f"{stack.settings.rasa_url}/webhooks/relay/{path}"
    if isinstance(body, str):
        return requests.post(url, data=body, headers={**headers, "Content-Type": "application/json"}, timeout=10)
    return requests.post(url, json=body, headers=headers, timeout=10)


def test_relay_channel_needs_the_token(stack: Stack) -> None:
    body = {"sender": "x-auth", "message": "hi"}
    assert post_relay(stack, body, None).status_code == 401
    assert post_relay(stack, body, "wrong").status_code == 401
    assert post_relay(stack, {"sender": "x-auth"}, None, "forget").status_code == 401
    assert post_relay(stack, body, str(stack.settings.rasa_api_token)).status_code == 200


@pytest.mark.parametrize("body", ["{not json", "[]", '{"sender": 5, "message": "hi"}', '{"sender": "a"}'])
def test_relay_channel_rejects_malformed_bodies(stack: Stack, body: str) -> None:
    assert post_relay(stack, body, str(stack.settings.rasa_api_token)).status_code == 400


def test_relay_channel_retry_of_a_stored_message_is_not_processed_twice(stack: Stack) -> None:
    token = str(stack.settings.rasa_api_token)
    body = {"sender": "x-dup", "message": "I have a headache", "message_id": "x-dup:1"}
    first = post_relay(stack, body, token).json()
    assert first["messages"] and first["duplicate"] is False
    again = post_relay(stack, {**body, "retry": True}, token).json()
    assert again["duplicate"] is True
    assert [m["text"] for m in again["messages"]] == [m["text"] for m in first["messages"]], "the stored answer, to send again"
    new = post_relay(stack, {**body, "message_id": "x-dup:2", "retry": True}, token).json()
    assert new["duplicate"] is False and new["messages"]

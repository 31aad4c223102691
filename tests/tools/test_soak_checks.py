"""The soak's books: how messages are scheduled and how latency drift is judged (the run itself is `make soak`)."""

from __future__ import annotations

from tools.benchmarks.soak import Plan, window_p95


def test_plan_spreads_messages_over_live_chats_and_replaces_finished_patients() -> None:
    plan = Plan(rate=30, live=300, per_chat=6, total=30 * 60 * 30)
    assert plan.message(0) == (0.0, 0, 0)
    assert plan.message(300) == (10.0, 0, 1), "each live chat writes every live / rate seconds"
    assert plan.message(300 * 6)[1:] == (300, 0), "after its 6 messages, slot 0 is a new patient"
    assert plan.conversations == 9000
    short = Plan(rate=30, live=300, per_chat=6, total=540)  # `--minutes 0.3`: the last message is not the newest chat's
    assert short.conversations == 300 == 1 + max(short.message(n)[1] for n in range(short.total))


def test_window_p95_counts_only_its_minutes_and_unanswered_as_late() -> None:
    start = 100.0
    pushes = {(c, 0): start + c for c in range(600)}  # one message a second for 10 minutes
    lat = {key: 20.0 for key in pushes}
    for c in range(300, 330):  # a slow patch in minute 6
        lat[(c, 0)] = 900.0
    first = window_p95(pushes, lat, start, 0, 300)
    last = window_p95(pushes, lat, start, 300, 600)
    assert (first["messages"], first["p95_ms"]) == (300, 20.0)
    assert last["messages"] == 300 and last["p95_ms"] == 900.0, "10 % slow messages show in the p95"
    del lat[(599, 0)]
    assert window_p95(pushes, lat, start, 590, 600)["p95_ms"] == float("inf"), "an unanswered message is never on time"

"""The speed-ups in bot/rasa_patches/ decide exactly like the Rasa code they replace."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import rasa.shared.utils.common
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction
from rasa.core.policies.policy import Policy
from rasa.core.policies.rule_policy import RulePolicy
from rasa.engine.graph import ExecutionContext, GraphComponent, GraphSchema, SchemaNode
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.engine.storage.local_model_storage import LocalModelStorage
from rasa.shared.core.domain import Domain
from rasa.shared.core.events import (
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    BotUttered,
    Event,
    FollowupAction,
    LoopInterrupted,
    Restarted,
    SessionStarted,
    SlotSet,
    UserUtteranceReverted,
    UserUttered,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import EndpointConfig

from bot import PROJECT_ROOT, fastjson, rasa_patches
from bot.rasa_patches import debug_format, endpoint_session, event_lookup, graph_runner, past_states, response_validation

SPEEDUPS = ("response_validation", "event_lookup", "graph_runner", "past_states", "debug_format", "endpoint_session")
rasa_patches.install(",".join(SPEEDUPS))  # the speed-ups, as `python -m bot rasa` installs them


def _stock_accepts(result: Any) -> bool:
    try:
        jsonschema.validate(result, RemoteAction.action_response_format_spec())
    except ValidationError:
        return False
    return True


def _ours_accepts(result: Any) -> bool:
    try:
        return RemoteAction._validate_action_result(None, result)  # type: ignore[arg-type]
    except ValidationError as error:
        assert "Failed to validate Action server response" in error.message
        return False


REAL_EVENTS = [
    SlotSet("triage_level", "emergency").as_dict(),
    SlotSet("symptoms", ["fever", "confusion"]).as_dict(),
    ActionExecuted("action_listen").as_dict(),
    BotUttered("Call 911 now", {"buttons": [{"title": "Yes", "payload": "/affirm"}]}).as_dict(),
    UserUttered("I can't breathe", {"name": "report_symptoms", "confidence": 0.9}, []).as_dict(),
    {"event": "followup", "name": "action_triage"},
    {"event": "reset_slots"},
    {"event": "restart"},
    {"event": "session_started"},
    {"event": "active_loop", "name": None},
]

RESPONSES: list[Any] = [
    {"events": REAL_EVENTS, "responses": [{"text": "hi"}]},
    {"events": [], "responses": []},
    {},
    {"events": "not a list"},
    {"events": [{"no_event_key": 1}]},
    {"events": [{"event": 5}]},
    {"events": [{"event": "no_such_event"}]},
    {"events": [{"event": "slot", "name": "x"}]},  # slot without value
    {"events": [{"event": "slot", "name": 3, "value": 1}]},
    {"events": [{"event": "slot", "name": "x", "value": None, "timestamp": "yesterday"}]},
    {"events": [{"event": "entities"}]},
    {"events": [{"event": "entities", "entities": [{"entity": "x", "value": 1}]}]},
    {"events": [{"event": "user", "text": 7}]},
    {"events": [{"event": "user", "parse_data": {"intent": {"name": 3}}}]},
    {"events": [{"event": "action", "name": "x", "hide_rule_turn": "no"}]},
    {"events": [{"event": "bot", "metadata": "x"}]},
    {"events": [REAL_EVENTS[0], {"event": "topic"}]},
    {"responses": 5},
    {"responses": [1]},
    [],
    "text",
]


@pytest.mark.parametrize("result", RESPONSES, ids=range(len(RESPONSES)))
def test_response_validation_matches_stock_jsonschema(result: Any) -> None:
    assert _ours_accepts(result) == _stock_accepts(result)


def _schema_words(schema: Any, names: set[str], consts: set[str]) -> None:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("properties", "patternProperties"):
                names.update(value)
            if key == "const":
                consts.add(value)
            _schema_words(value, names, consts)
    elif isinstance(schema, list):
        for value in schema:
            _schema_words(value, names, consts)


_NAMES: set[str] = set()
_EVENT_TYPES: set[str] = set()
_schema_words(RemoteAction.action_response_format_spec(), _NAMES, _EVENT_TYPES)
_KEYS = st.sampled_from(sorted(_NAMES))
_SCALARS = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False) | st.text(max_size=5)
_JSON = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4), max_leaves=12)
_BY_TYPE = {
    "object": st.dictionaries(_KEYS, _JSON, max_size=2),
    "array": st.lists(_JSON, max_size=2),
    "string": st.text(max_size=4),
    "null": st.none(),
    "boolean": st.booleans(),
    "number": st.integers(-9, 9) | st.floats(allow_nan=False),
    "integer": st.integers(-9, 9) | st.just(2.0),
}


def _conforming(schema: Any) -> st.SearchStrategy[Any]:
    """Values built from the schema, so that most are valid and the checks reach deep."""
    if "const" in schema:
        return st.just(schema["const"])
    kinds = schema.get("type", [])
    kinds = kinds if isinstance(kinds, list) else [kinds]
    if "properties" in schema:
        props = schema["properties"]
        required = {k: _conforming(props.get(k, {})) for k in schema.get("required", [])}
        optional = {k: _conforming(sub) for k, sub in props.items() if k not in required}
        base = st.fixed_dictionaries(required, optional=optional)
        return base if "null" not in kinds else base | st.none()
    if "items" in schema:
        return st.lists(_conforming(schema["items"]), max_size=3)
    if not kinds:
        return _JSON
    return st.one_of([_BY_TYPE[k] for k in kinds])


def _spoiled(value: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """The same event, or (one time in four) with one key replaced by anything, often wrong."""
    if not value:
        return st.just(value)
    spoil = st.sampled_from([False, False, False, True])
    return st.tuples(st.sampled_from(sorted(value)), _JSON, spoil).map(
        lambda change: {**value, change[0]: change[1]} if change[2] else value
    )


_BRANCHES = RemoteAction.action_response_format_spec()["properties"]["events"]["items"]["oneOf"]
_EVENTS = st.one_of(
    [
        _conforming(branch).map(lambda v, b=branch: {**v, "event": b["properties"]["event"]["const"]}).flatmap(_spoiled)
        for branch in _BRANCHES
    ]
) | st.dictionaries(_KEYS, _JSON, max_size=4).map(lambda extra: {**extra, "event": extra.get("event", "slot")})


@settings(max_examples=600, deadline=None)
@given(
    st.fixed_dictionaries({}, optional={"events": st.lists(_EVENTS, max_size=4) | _JSON, "responses": st.lists(_BY_TYPE["object"]) | _JSON})
    | _JSON
)
@pytest.mark.slow
def test_response_validation_matches_stock_jsonschema_on_generated_responses(result: Any) -> None:
    assert _ours_accepts(result) == _stock_accepts(result)


_SAMPLES: list[Any] = [None, True, False, 0, 1, -3, 2.0, 2.5, "", "slot", [], [1, "a"], {}, {"event": "slot"}]
_KEYWORD_SCHEMAS: list[dict[str, Any]] = [
    *({"type": kind} for kind in ["object", "array", "string", "null", "boolean", "number", "integer"]),
    {"type": ["string", "null"]},
    {"type": ["number", "null"]},
    {"const": "slot"},
    {"required": ["event"]},
    {"properties": {"event": {"type": "integer"}}},
    {"items": {"type": "string"}},
    {},
]


@pytest.mark.parametrize("schema", _KEYWORD_SCHEMAS, ids=str)
def test_each_compiled_keyword_decides_like_jsonschema(schema: dict[str, Any]) -> None:
    cls = jsonschema.validators.validator_for(schema)
    compiled = response_validation._compile(schema, cls)
    for value in [*_SAMPLES, *({"event": v} for v in _SAMPLES), *([v] for v in _SAMPLES)]:
        assert compiled(value) == cls(schema).is_valid(value), value


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(_ANY_JSON)
def test_fast_json_reads_back_like_the_standard_encoder(value: Any) -> None:
    assert json.dumps(json.loads(fastjson.dumps(value))) == json.dumps(value)


def test_the_cases_cover_both_outcomes() -> None:
    decisions = {_stock_accepts(r) for r in RESPONSES}
    assert decisions == {True, False}


def test_event_types_resolve_like_rasa() -> None:
    for cls in rasa.shared.utils.common.all_subclasses(Event):
        first = next(c for c in rasa.shared.utils.common.all_subclasses(Event) if c.type_name == cls.type_name)
        assert Event.resolve_by_type(cls.type_name) is first
    assert Event.resolve_by_type("topic") is None
    assert Event.resolve_by_type("nope", default=SlotSet) is SlotSet
    with pytest.raises(ValueError, match="Unknown event name"):
        Event.resolve_by_type("nope")


def test_event_defined_after_first_lookup_is_found() -> None:
    assert Event.resolve_by_type("slot") is SlotSet  # fills the cache

    class LateEvent(SlotSet):
        type_name = "crs_late_test_event"

    assert Event.resolve_by_type("crs_late_test_event") is LateEvent


def test_patches_are_installed() -> None:
    assert RemoteAction._validate_action_result is response_validation._validate_action_result
    assert Event.resolve_by_type is event_lookup._resolve_event_by_type
    assert DaskGraphRunner.run is graph_runner._run_graph
    assert DialogueStateTracker.past_states is past_states._past_states
    assert EndpointConfig.session is endpoint_session._endpoint_session
    assert DialogueStateTracker.copy is past_states._copy
    assert RulePolicy._rule_key_to_state is past_states._rule_key_to_state


def test_states_are_formatted_when_debug_logging_is_on(caplog: pytest.LogCaptureFixture) -> None:
    states = [{"user": {"intent": "greet"}, "prev_action": {"action_name": "action_listen"}}]
    assert Policy.format_tracker_states(states) == ""
    with caplog.at_level(logging.DEBUG, logger="rasa.core.policies.rule_policy"):
        assert Policy.format_tracker_states(states) == debug_format.STOCK_FORMAT_STATES(states) != ""


class _Join(GraphComponent):
    """A graph node that records its calls and joins its inputs into a string."""

    calls: list[str] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.name = config["name"]

    @classmethod
    def create(cls, config: dict[str, Any], *args: Any, **kwargs: Any) -> _Join:
        return cls(config)

    def run(self, **inputs: str) -> str:
        _Join.calls.append(self.name)
        if "boom" in inputs.values():
            raise RuntimeError("boom")
        return self.name + "(" + ",".join(f"{k}={inputs[k]}" for k in sorted(inputs)) + ")"


def _schema() -> GraphSchema:
    def node(name: str, target: bool = False, **needs: str) -> SchemaNode:
        config = {"name": name}
        return SchemaNode(needs=needs, uses=_Join, constructor_name="create", fn="run", config=config, is_target=target)

    return GraphSchema(
        {
            "a": node("a", x="msg"),
            "b": node("b", a="a"),
            "c": node("c", a="a", b="b"),
            "d": node("d", target=True, c="c", x="msg"),  # what runs when no targets are given
            "unused": node("unused", a="a"),
        }
    )


@pytest.mark.parametrize(
    ("inputs", "targets"),
    [({"msg": "hi"}, ["d"]), ({"msg": "hi"}, ["b", "c"]), ({"msg": "hi"}, None), ({"msg": "hi", "b": "given"}, ["d"])],
)
def test_graph_runner_matches_dask(tmp_path: Path, inputs: dict[str, str], targets: list[str] | None) -> None:
    schema = _schema()
    runner = DaskGraphRunner(schema, LocalModelStorage(tmp_path), ExecutionContext(schema, "test"))
    _Join.calls.clear()
    stock = graph_runner.STOCK_GRAPH_RUN(runner, dict(inputs), targets)
    stock_calls = sorted(_Join.calls)
    _Join.calls.clear()
    ours = runner.run(dict(inputs), targets)
    assert ours == stock
    assert sorted(_Join.calls) == stock_calls, "each needed node runs once, unneeded ones not at all"
    with pytest.raises(Exception) as stock_error:
        graph_runner.STOCK_GRAPH_RUN(runner, {"msg": "boom"}, targets)
    with pytest.raises(stock_error.type, match=str(stock_error.value)):
        runner.run({"msg": "boom"}, targets)


def _conversation_events() -> list[Event]:
    return [
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
        UserUttered("I had Kymriah on Monday", {"name": "inform_therapy", "confidence": 1.0}),
        SlotSet("therapy", "tisagenlecleucel"),
        ActionExecuted("action_triage"),
        BotUttered("noted"),
        ActionExecuted("action_listen"),
        UserUttered("fever 39.2 and shaking", {"name": "report_symptoms", "confidence": 1.0}),
        ActionExecuted("action_triage"),
        SlotSet("triage_level", "urgent"),
        BotUttered("call your care team now"),
        ActionExecuted("action_listen"),
        UserUttered("no", {"name": "deny", "confidence": 1.0}),
        ActionExecuted("action_answer_yes_no", hide_rule_turn=True),
        BotUttered("ok"),
        ActionExecuted("action_listen", hide_rule_turn=True),
        UserUttered("oops wrong chat", {"name": "out_of_scope", "confidence": 0.9}),
        UserUtteranceReverted(),
        UserUttered("my lips are blue", {"name": "report_symptoms", "confidence": 1.0}),
        ActionExecuted("action_triage"),
        ActionReverted(),
        ActionExecuted("action_triage"),
        FollowupAction("action_listen"),
        ActionExecuted("action_listen"),
        ActionExecuted("action_session_start"),
        SessionStarted(),
        ActionExecuted("action_listen"),
        UserUttered("hello", {"name": "greet", "confidence": 1.0}),
        ActionExecuted("utter_greet"),
        Restarted(),
        ActionExecuted("action_listen"),
        UserUttered("hi again", {"name": "greet", "confidence": 1.0}),
        ActiveLoop("some_form"),
        ActionExecuted("some_form"),
        ActionExecuted("action_listen"),
    ]


@pytest.mark.parametrize("loops", [False, True])
def test_past_states_match_rasa_after_every_event(loops: bool) -> None:
    domain = Domain.load(str(Path(PROJECT_ROOT) / "domain.yml"))
    tracker = DialogueStateTracker("states-test", domain.slots)
    rule_only = {"slots": ["triage_level"], "loops": []}
    events = _conversation_events()
    for event in events if loops else [e for e in events if not isinstance(e, ActiveLoop)]:
        tracker.update(event)
        if isinstance(event, BotUttered):
            tracker = copy.deepcopy(tracker)  # the processor copies trackers: copies must stay right
        for omit, ignore, data in [(False, False, None), (False, True, rule_only), (True, False, None)]:
            ours = tracker.past_states(domain, omit, ignore, data)
            assert ours == past_states.STOCK_PAST_STATES(tracker, domain, omit, ignore, data)
            if ours:
                ours[-1].clear()  # the featurizer edits what it gets: the memo must not see it
            assert tracker.past_states(domain, omit, ignore, data) == past_states.STOCK_PAST_STATES(tracker, domain, omit, ignore, data)
    assert loops or tracker.__dict__["_crs_states"], "carried on, not replayed, without loops"


def _snapshot(tracker: DialogueStateTracker) -> dict[str, Any]:
    """Everything a tracker holds; events by identity, since Rasa's replay shares them."""

    def plain(value: Any) -> Any:
        if not isinstance(value, Event):
            return value
        if any(value is e for e in tracker.events):
            return ("event", id(value))
        # made by a reset: the tracker's own, equal but for the time it was made
        return ("own event", {k: v for k, v in value.as_dict().items() if k != "timestamp"})

    out: dict[str, Any] = {"type": type(tracker)}
    for key, value in vars(tracker).items():
        if key.startswith("_crs_"):
            continue
        if key == "events":
            out[key] = ([id(e) for e in value], value.maxlen)
        elif key == "slots":
            out[key] = (type(value), {n: (type(s), {a: plain(x) for a, x in vars(s).items()}) for n, s in value.items()})
        else:
            out[key] = plain(value)
    return out


@pytest.mark.parametrize("max_history", [None, 6])
def test_tracker_copy_matches_rasa_replay_after_every_event(max_history: int | None) -> None:
    domain = Domain.load(str(Path(PROJECT_ROOT) / "domain.yml"))
    tracker = DialogueStateTracker("copy-test", domain.slots, max_event_history=max_history)
    for event in _conversation_events():
        tracker.update(event)
        before = _snapshot(tracker)
        ours, stock = tracker.copy(), past_states.STOCK_COPY(tracker)
        assert _snapshot(ours) == _snapshot(stock)
        assert _snapshot(tracker) == before, "copying leaves the original alone"
        # the caller owns its copy: changing it must not reach the kept replay
        ours.update(SlotSet("triage_level", "emergency"))
        ours.update(LoopInterrupted(True))  # edits the active loop in place
        ours.update(ActiveLoop("another_form"))
        if ours.latest_action:
            ours.latest_action["action_name"] = "changed"
        assert _snapshot(tracker.copy()) == _snapshot(past_states.STOCK_COPY(tracker))
        if isinstance(event, BotUttered):
            tracker = copy.deepcopy(tracker)
    assert max_history or tracker.__dict__["_crs_replica"].seen == len(tracker.events), "carried on"


def test_rule_keys_are_parsed_once_and_left_as_parsed() -> None:
    rule = [
        {"prev_action": {"action_name": "action_listen"}, "user": {"intent": "report_symptoms", "entities": ["symptom"]}},
        {"prev_action": {"action_name": "action_triage"}, "slots": {"triage_level": "should_not_be_set"}},
    ]
    key = json.dumps(rule, sort_keys=True)
    parsed = RulePolicy._rule_key_to_state(key)
    assert parsed == json.loads(key) and RulePolicy._rule_key_to_state(key) is parsed
    policy = RulePolicy.__new__(RulePolicy)  # the check only reads the key
    conversation = [
        {"prev_action": {"action_name": "action_listen"}, "user": {"intent": "report_symptoms", "entities": ("symptom",)}},
        {"prev_action": {"action_name": "action_triage"}, "slots": {"triage_level": (1.0,)}},
        {},
    ]
    decisions = [policy._is_rule_applicable(key, i, state) for i in range(3) for state in conversation]
    assert True in decisions and False in decisions
    assert parsed == json.loads(key), "RulePolicy's reader left the shared parse as it was"


async def test_action_endpoint_reuses_one_connection() -> None:
    peers: list[object] = []

    async def handler(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername"))
        return web.json_response({"events": [], "responses": []})

    app = web.Application()
    app.router.add_post("/webhook", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        endpoint = EndpointConfig(f"http://127.0.0.1:{port}/webhook")
        for _ in range(3):
            assert await endpoint.request(json={"next_action": "x"}, method="post") == {"events": [], "responses": []}
        assert len(peers) == 3 and len(set(peers)) == 1, "one keep-alive connection for all calls"
        await asyncio.sleep(endpoint_session.KEEPALIVE_SECONDS + 0.5)
        assert await endpoint.request(json={}, method="post") == {"events": [], "responses": []}
        assert peers[-1] != peers[0], "an idle connection is closed by the client, a new one opened"
    finally:
        await runner.cleanup()

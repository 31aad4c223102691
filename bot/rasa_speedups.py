"""Performance fixes for Rasa 3.6 internals, installed by bot/rasa_patches (`python -m bot rasa`), one named patch each.

Each fix comes from a py-spy profile of the Rasa server answering REST messages that call the
action server, and each keeps Rasa's behaviour (tests/test_rasa_speedups.py compares them with
the stock code):

* `RemoteAction._validate_action_result` re-checked the fixed response schema against the
  JSON-Schema metaschema on every action call (41 % of server time). The schema is now
  compiled once. Its event schema is a `oneOf` over 23 event types, each told apart only by
  `event: {const: ...}`, so jsonschema tried all 23 branches for every event (8 % of server
  time). We validate the shared part, then only the branch whose `const` matches — the same
  accept/reject decision, since no other branch can match a given `event` value.
* `Event.resolve_by_type` walked every `Event` subclass (with `inspect.isabstract`) for each
  stored event it deserialised (5 %). The type-name → class map is now cached, rebuilt on a miss
  so events defined later (plugins) are still found.
* `DaskGraphRunner.run` handed each message's NLU and policy graphs to dask, whose scheduler
  cost ~7 % of server time to order a dozen nodes that run one after another anyway. The
  graphs are now run depth-first in this process: each needed node once, after its inputs,
  with the same inputs, outputs and `GraphRunError` wrapping.
* `DialogueStateTracker.past_states` replayed the whole conversation into a fresh tracker to
  build the policies' states, in each policy, for every action predicted (~15 % of server
  time, growing with the conversation). The loop of `Domain.states_for_tracker_history` is now
  kept on the tracker and carried on over the events added since the last call; the same loop
  body, the same final state. Events that rewrite history (restart, new session, reverts,
  loops) make it start again from the beginning, as Rasa does. Callers get their own copy, since
  the featurizer edits the last state in place.
* `RulePolicy` formatted the dialogue states as text for a debug log line at every
  prediction, whether or not debug logging is on (4 % of server time). The text is now only
  built when that logger would write it.
* `EndpointConfig.request` opened a new aiohttp session, so a new TCP connection to the action
  server, for every action call. Each endpoint now keeps one session per event loop with
  keep-alive connections, closed client-side (2 s) before the action server's Sanic drops them
  (5 s), so a request never lands on a connection the server is closing.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

import aiohttp
import rasa.shared.utils.common
import ujson
from jsonschema import ValidationError, validators
from jsonschema.exceptions import best_match
from rasa.core.actions.action import RemoteAction
from rasa.core.policies.policy import Policy
from rasa.core.policies.rule_policy import RulePolicy
from rasa.engine.exceptions import GraphRunError
from rasa.engine.graph import GraphSchema
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.constants import PREVIOUS_ACTION
from rasa.shared.core.domain import Domain, State
from rasa.shared.core.events import (
    ActionExecuted,
    ActionReverted,
    ActiveLoop,
    Event,
    Restarted,
    SessionStarted,
    UserUtteranceReverted,
)
from rasa.shared.core.trackers import DialogueStateTracker
from rasa.utils.endpoints import DEFAULT_REQUEST_TIMEOUT, EndpointConfig

STOCK_GRAPH_RUN = DaskGraphRunner.run  # kept for the equivalence tests
STOCK_PAST_STATES = DialogueStateTracker.past_states
STOCK_FORMAT_STATES = Policy.format_tracker_states
STOCK_COPY = DialogueStateTracker.copy
STOCK_RULE_KEY_TO_STATE = RulePolicy._rule_key_to_state
KEEPALIVE_SECONDS = 2.0


_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    # jsonschema's draft 2020-12 type checker, for what json.loads can produce
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}
_COMPILED_KEYWORDS = {"type", "const", "required", "properties", "items"}


def _compile(schema: Any, cls: Any) -> Callable[[Any], bool]:
    """A plain-Python `is_valid` for the keywords the response schema uses; jsonschema for the rest."""
    if (
        not isinstance(schema, dict)
        or set(schema) - _COMPILED_KEYWORDS
        or not isinstance(schema.get("const", ""), str)
        or not isinstance(schema.get("items", {}), dict)
        or any(t not in _TYPE_CHECKS for t in _as_list(schema.get("type", [])))
    ):
        return cls(schema).is_valid
    checks: list[Callable[[Any], bool]] = []
    if "type" in schema:
        kinds = tuple(_TYPE_CHECKS[t] for t in _as_list(schema["type"]))
        checks.append(lambda v: any(kind(v) for kind in kinds))
    if "const" in schema:
        const = schema["const"]
        checks.append(lambda v: isinstance(v, str) and v == const)
    if "required" in schema:
        required = tuple(schema["required"])
        checks.append(lambda v: not isinstance(v, dict) or all(k in v for k in required))
    if "properties" in schema:
        props = tuple((k, _compile(sub, cls)) for k, sub in schema["properties"].items())
        checks.append(lambda v: not isinstance(v, dict) or all(k not in v or ok(v[k]) for k, ok in props))
    if "items" in schema:
        item = _compile(schema["items"], cls)
        checks.append(lambda v: not isinstance(v, list) or all(item(x) for x in v))
    return lambda v: all(check(v) for check in checks)


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class _ResponseValidator:
    """Validates an action server response like `jsonschema.validate(result, spec)`."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
        base = copy.deepcopy(schema)
        event_schema = base["properties"]["events"]["items"]
        branches = event_schema.pop("oneOf")
        self._base = cls(base)
        self._fast_base = _compile(base, cls)
        self._branches: dict[str, Any] = {}
        self._fast_branches: dict[str, Callable[[Any], bool]] = {}
        for branch in branches:
            name = branch["properties"]["event"]["const"]
            if name not in self._branches:
                self._branches[name] = cls(branch)
                self._fast_branches[name] = _compile(branch, cls)
        self._full = cls(schema)  # only used to word the error of an unknown event type

    def accepts(self, result: Any) -> bool:
        """The accept/reject decision alone, without jsonschema's walk (the common, valid case)."""
        if not self._fast_base(result):
            return False
        for event in result.get("events", ()):
            branch = self._fast_branches.get(event["event"])
            if branch is None or not branch(event):
                return False
        return True

    def error(self, result: Any) -> ValidationError | None:
        if self.accepts(result):
            return None
        err = best_match(self._base.iter_errors(result))
        if err is not None:
            return err
        events = result.get("events") if isinstance(result, dict) else None
        for event in events if isinstance(events, list) else ():
            branch = self._branches.get(event["event"])  # base schema made sure it is a string
            if branch is None or not branch.is_valid(event):
                return best_match(self._full.iter_errors(result))
        return None


@lru_cache(maxsize=1)
def _response_validator() -> _ResponseValidator:
    return _ResponseValidator(RemoteAction.action_response_format_spec())


def _validate_action_result(self: RemoteAction, result: dict[str, Any]) -> bool:
    error = _response_validator().error(result)
    if error is not None:
        error.message += (
            ". Failed to validate Action server response from API, make sure your response from the Action "
            f"endpoint is valid. For more information about the format visit {DOCS_BASE_URL}/custom-actions"
        )
        raise error
    return True


_event_classes: dict[str, type[Event]] = {}


def _resolve_event_by_type(type_name: str, default: type[Event] | None = None) -> type[Event] | None:
    """`Event.resolve_by_type` with the subclass walk cached (first match wins, as in Rasa)."""
    found = _event_classes.get(type_name)
    if found is None:
        _event_classes.clear()
        for cls in rasa.shared.utils.common.all_subclasses(Event):
            _event_classes.setdefault(cls.type_name, cls)
        found = _event_classes.get(type_name)
    if found is not None:
        return found
    if type_name == "topic":
        return None  # Rasa: backwards compatibility with old TopicSet events
    if default is not None:
        return default
    raise ValueError(f"Unknown event name '{type_name}'.")


def _run_graph(self: DaskGraphRunner, inputs: dict[str, Any] | None = None, targets: list[str] | None = None) -> dict[str, Any]:
    """`DaskGraphRunner.run` without dask: the same graph evaluated depth-first in this thread."""
    run_targets = targets if targets else self._graph_schema.target_names
    key = tuple(run_targets)
    schemas: dict[tuple[str, ...], GraphSchema] = self.__dict__.setdefault("_crs_minimal_schemas", {})
    schema = schemas.get(key)
    if schema is None:
        schema = schemas[key] = self._graph_schema.minimal_graph_schema(run_targets)
    given = inputs or {}
    for value in given.values():
        if isinstance(value, str) and value in schema.nodes:
            raise GraphRunError(f"Input value '{value}' clashes with a node name.")
    results: dict[str, Any] = {}

    def evaluate(name: str) -> tuple[str, Any] | str:
        if name not in results:
            if name in given:
                results[name] = (name, given[name])  # dask saw inputs as literal (name, value)
            elif name not in schema.nodes:
                return name  # as dask: an unresolvable need arrives as its name (GraphNode warns)
            else:
                needs = schema.nodes[name].needs.values()
                results[name] = self._instantiated_nodes[name](*(evaluate(n) for n in needs))
        return results[name]

    try:
        return dict(evaluate(target) for target in run_targets)
    except RuntimeError as e:
        raise GraphRunError("Error running runner.") from e


# Events after which the applied history is not the old one plus the new events (Rasa's
# `DialogueStateTracker.applied_events`): such trackers get their states computed afresh.
_NOT_APPENDING = (Restarted, SessionStarted, ActionReverted, UserUtteranceReverted, ActiveLoop)


@cache
def _rewrites_history(event_type: type[Event]) -> bool:
    """`isinstance(event, _NOT_APPENDING)` by type, cached: Event is an ABC, whose check is slow."""
    return issubclass(event_type, _NOT_APPENDING)


@dataclass
class _StatesFold:
    """`Domain.states_for_tracker_history`'s loop, stopped after `seen` events, ready to go on."""

    seen: int
    boundary: Event | None  # the tracker's event at index seen - 1 when this was made
    replay: DialogueStateTracker  # the prior tracker after the applied events so far
    states: list[State] = field(default_factory=list)
    last_ml_action: Any = None
    turn_was_hidden: bool = False


def _fold_step(fold: _StatesFold, domain: Domain, tr: DialogueStateTracker, hide_rule_turn: bool, args: tuple) -> None:
    """One iteration of the loop in Rasa 3.6's `Domain.states_for_tracker_history`."""
    omit_unset_slots, ignore_rule_only_turns, rule_only_data = args
    if ignore_rule_only_turns:
        if not fold.turn_was_hidden:
            fold.last_ml_action = domain._get_prev_action_sub_state(tr)
        if not tr.followup_action and tr.latest_action_name != tr.active_loop_name:
            fold.turn_was_hidden = hide_rule_turn
        if fold.turn_was_hidden:
            return
    state = domain.get_active_state(tr, omit_unset_slots=omit_unset_slots)
    if ignore_rule_only_turns:
        domain._remove_rule_only_features(state, rule_only_data)
        if fold.states:
            domain._substitute_rule_only_user_input(state, fold.states[-1])
        if fold.last_ml_action:
            state[PREVIOUS_ACTION] = fold.last_ml_action
    fold.states.append(domain._clean_state(state))


def _advance(fold: _StatesFold, domain: Domain, events: Iterable[Event], args: tuple) -> None:
    """Rasa's `generate_all_prior_trackers` over `events`, without its final yield."""
    for event in events:
        if isinstance(event, ActionExecuted):
            _fold_step(fold, domain, fold.replay, event.hide_rule_turn, args)
        fold.replay.update(event)


def _copy_states(states: list[State]) -> list[State]:
    """Callers edit the states they get (the featurizer deletes keys of the last one)."""
    return [{key: dict(sub) if isinstance(sub, dict) else copy.deepcopy(sub) for key, sub in state.items()} for state in states]


def _past_states(
    self: DialogueStateTracker,
    domain: Domain,
    omit_unset_slots: bool = False,
    ignore_rule_only_turns: bool = False,
    rule_only_data: dict[str, Any] | None = None,
) -> list[State]:
    """`DialogueStateTracker.past_states`, carried on from the last call instead of replayed."""
    args = (omit_unset_slots, ignore_rule_only_turns, rule_only_data)
    key = (id(domain), omit_unset_slots, ignore_rule_only_turns, _freeze(rule_only_data))
    folds: dict[tuple, tuple[Domain, _StatesFold]] = self.__dict__.setdefault("_crs_states", {})
    events = self.events
    held = folds.get(key)
    fold = held[1] if held is not None and held[0] is domain else None
    new_events: list[Event] = []
    if fold is not None and len(events) >= fold.seen and (fold.seen == 0 or events[fold.seen - 1] is fold.boundary):
        new_events = list(itertools.islice(events, fold.seen, None))
        if any(_rewrites_history(type(e)) for e in new_events):
            fold = None
    else:
        fold = None
    if fold is None:
        if any(isinstance(e, ActiveLoop) for e in events):
            folds.pop(key, None)  # loops rewrite earlier history: Rasa's own code, every time
            return STOCK_PAST_STATES(self, domain, omit_unset_slots, ignore_rule_only_turns, rule_only_data)
        fold = _StatesFold(0, None, self.init_copy())
        new_events = self.applied_events()
    _advance(fold, domain, new_events, args)
    fold.seen = len(events)
    fold.boundary = events[-1] if events else None
    folds[key] = (domain, fold)
    last = _StatesFold(fold.seen, fold.boundary, fold.replay, list(fold.states), fold.last_ml_action, fold.turn_was_hidden)
    _fold_step(last, domain, fold.replay, False, args)  # the final `yield tracker, False`
    return _copy_states(last.states)


@dataclass
class _Replica:
    """Rasa's `travel_back_in_time` replay of the tracker's first `seen` events, ready to go on."""

    seen: int
    boundary: Event | None
    tracker: DialogueStateTracker


def _copy(self: DialogueStateTracker) -> DialogueStateTracker:
    """`DialogueStateTracker.copy` (replay every event into a fresh tracker), replaying only new events.

    The replay is kept on the tracker and carried on; callers get a clone of it whose mutable
    parts are their own and whose events are the same objects, as Rasa's replay shares them.
    """
    if type(self) is not DialogueStateTracker:
        return STOCK_COPY(self)
    events = self.events
    held: _Replica | None = self.__dict__.get("_crs_replica")
    if held is None or len(events) < held.seen or (held.seen and events[held.seen - 1] is not held.boundary):
        held = self.__dict__["_crs_replica"] = _Replica(0, None, self.init_copy())
    for event in itertools.islice(events, held.seen, None):
        held.tracker.update(event)
    held.seen, held.boundary = len(events), events[-1] if events else None
    return _clone(held.tracker)


def _clone(tracker: DialogueStateTracker) -> DialogueStateTracker:
    clone = object.__new__(DialogueStateTracker)
    state = {k: v for k, v in tracker.__dict__.items() if not k.startswith("_crs_")}
    state["events"] = tracker._create_events(list(tracker.events))
    slots = copy.copy(tracker.slots)  # keeps AnySlotDict
    for name, slot in slots.items():
        slots[name] = copy.copy(slot)
    state["slots"] = slots
    state["latest_action"] = copy.copy(tracker.latest_action)
    state["active_loop"] = copy.copy(tracker.active_loop)
    for key in ("latest_message", "latest_bot_utterance"):
        # an event of the conversation is shared, as in Rasa's replay; otherwise it is the empty
        # one a reset makes, and each tracker has its own
        value = state.get(key)
        if value is not None and not any(value is e for e in reversed(state["events"])):
            state[key] = type(value).empty()
    clone.__dict__.update(state)
    return clone


@lru_cache(maxsize=4096)
def _rule_key_to_state(rule_key: str) -> list[State]:
    """`RulePolicy._rule_key_to_state` (json.loads of a learned rule), parsed once per rule.

    RulePolicy parses every rule's key again for each turn of each prediction; its two callers
    only read the result."""
    return STOCK_RULE_KEY_TO_STATE(rule_key)


def _freeze(value: Any) -> Any:
    """A hashable, equal-for-equal form of rule_only_data (the graph hands over a new dict each time)."""
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple, set)):
        return tuple(_freeze(v) for v in value)
    return value


def _format_tracker_states(states: list[dict]) -> str:
    """`Policy.format_tracker_states`, for the debug log only: empty when it is not written."""
    if logging.getLogger("rasa.core.policies.rule_policy").isEnabledFor(logging.DEBUG):
        return STOCK_FORMAT_STATES(states)
    return ""


def dumps(value: Any) -> str:
    """`json.dumps` through ujson (a Sanic dependency), ~2.5x faster on trackers; json for what ujson refuses."""
    try:
        return ujson.dumps(value, escape_forward_slashes=False)
    except (TypeError, OverflowError, ValueError):
        return json.dumps(value)


class _BorrowedSession:
    """`async with` over a long-lived session that must stay open after the block."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def __aenter__(self) -> aiohttp.ClientSession:
        return self._session

    async def __aexit__(self, *exc: object) -> None:
        return None


def _endpoint_session(self: EndpointConfig) -> _BorrowedSession:
    """`EndpointConfig.session` with one keep-alive session per endpoint and event loop."""
    loop = asyncio.get_running_loop()
    sessions: dict[int, aiohttp.ClientSession] = self.__dict__.setdefault("_crs_sessions", {})
    session = sessions.get(id(loop))
    if session is None or session.closed or session._loop is not loop:
        auth = aiohttp.BasicAuth(self.basic_auth["username"], self.basic_auth["password"]) if self.basic_auth else None
        session = sessions[id(loop)] = aiohttp.ClientSession(
            headers=self.headers,
            auth=auth,
            timeout=aiohttp.ClientTimeout(total=DEFAULT_REQUEST_TIMEOUT),
            connector=aiohttp.TCPConnector(keepalive_timeout=KEEPALIVE_SECONDS),
            json_serialize=dumps,
        )
    return _BorrowedSession(session)


# One function per patch (bot/rasa_patches names them; CRS_RASA_PATCHES switches them one by one).
def patch_response_validation() -> None:
    RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]


def patch_event_lookup() -> None:
    Event.resolve_by_type = staticmethod(_resolve_event_by_type)  # type: ignore[method-assign,assignment]


def patch_graph_runner() -> None:
    DaskGraphRunner.run = _run_graph  # type: ignore[method-assign]


def patch_past_states() -> None:
    """The carried-on states fold, with the tracker copy and rule-state parsing it relies on."""
    DialogueStateTracker.past_states = _past_states  # type: ignore[method-assign]
    DialogueStateTracker.copy = _copy  # type: ignore[method-assign]
    RulePolicy._rule_key_to_state = staticmethod(_rule_key_to_state)  # type: ignore[method-assign,assignment]


def patch_debug_format() -> None:
    Policy.format_tracker_states = staticmethod(_format_tracker_states)  # type: ignore[method-assign,assignment]


def patch_endpoint_session() -> None:
    EndpointConfig.session = _endpoint_session  # type: ignore[method-assign]


PATCHES = {
    "response_validation": patch_response_validation,
    "event_lookup": patch_event_lookup,
    "graph_runner": patch_graph_runner,
    "past_states": patch_past_states,
    "debug_format": patch_debug_format,
    "endpoint_session": patch_endpoint_session,
}


def apply() -> None:
    """Every speed-up (idempotent: each assigns the same function again)."""
    for patch in PATCHES.values():
        patch()


__all__ = ["PATCHES", "ValidationError", "apply"]

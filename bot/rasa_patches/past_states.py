"""`DialogueStateTracker.past_states` and `.copy` carried on instead of replayed.

Replaces: `past_states` replayed the whole conversation into a fresh tracker to build the
policies' states, in each policy, for every action predicted (~15 % of the server's time, growing
with the conversation). The loop of `Domain.states_for_tracker_history` is now kept on the
tracker and carried on over the events added since the last call: the same loop body, the same
final state. Events that rewrite history (restart, new session, reverts, loops) start it again
from the beginning, as Rasa does. Callers get their own copy, since the featurizer edits the
last state in place. `copy` (replay every event into a fresh tracker) and
`RulePolicy._rule_key_to_state` (json.loads of a learned rule for each turn of each prediction)
are carried on and cached the same way, since the fold relies on them.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from rasa.core.policies.rule_policy import RulePolicy
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

STOCK_PAST_STATES = DialogueStateTracker.past_states  # kept for the equivalence tests
STOCK_COPY = DialogueStateTracker.copy
STOCK_RULE_KEY_TO_STATE = RulePolicy._rule_key_to_state


# Events after which the applied history is not the old one plus the new events (Rasa's
# `DialogueStateTracker.applied_events`): such trackers get their states computed afresh.
_NOT_APPENDING = (Restarted, SessionStarted, ActionReverted, UserUtteranceReverted, ActiveLoop)


@cache
def _rewrites_history(event_type: Any) -> bool:
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
        if any(_rewrites_history(e.__class__) for e in new_events):
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


def install() -> None:
    DialogueStateTracker.past_states = _past_states
    DialogueStateTracker.copy = _copy
    RulePolicy._rule_key_to_state = staticmethod(_rule_key_to_state)

"""Performance fixes for Rasa 3.6 internals, applied when the Rasa server loads our component.

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
"""

from __future__ import annotations

import copy
from functools import lru_cache
from typing import Any

import rasa.shared.utils.common
from jsonschema import ValidationError, validators
from jsonschema.exceptions import best_match
from rasa.core.actions.action import RemoteAction
from rasa.engine.exceptions import GraphRunError
from rasa.engine.graph import GraphSchema
from rasa.engine.runner.dask import DaskGraphRunner
from rasa.shared.constants import DOCS_BASE_URL
from rasa.shared.core.events import Event

_PATCHED = "_crs_speedups"
STOCK_GRAPH_RUN = DaskGraphRunner.run  # kept for the equivalence test


class _ResponseValidator:
    """Validates an action server response like `jsonschema.validate(result, spec)`."""

    def __init__(self, schema: dict[str, Any]) -> None:
        cls = validators.validator_for(schema)
        cls.check_schema(schema)
        base = copy.deepcopy(schema)
        event_schema = base["properties"]["events"]["items"]
        branches = event_schema.pop("oneOf")
        self._base = cls(base)
        self._branches: dict[str, Any] = {}
        for branch in branches:
            self._branches.setdefault(branch["properties"]["event"]["const"], cls(branch))
        self._full = cls(schema)  # only used to word the error of an unknown event type

    def error(self, result: Any) -> ValidationError | None:
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


def apply() -> None:
    """Idempotent: install the faster, equivalent implementations."""
    if not getattr(RemoteAction, _PATCHED, False):
        RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
        Event.resolve_by_type = staticmethod(_resolve_event_by_type)  # type: ignore[method-assign,assignment]
        DaskGraphRunner.run = _run_graph  # type: ignore[method-assign]
        setattr(RemoteAction, _PATCHED, True)


__all__ = ["ValidationError", "apply"]

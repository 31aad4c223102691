"""`RemoteAction._validate_action_result`, with the response schema compiled once.

Replaces: Rasa re-checked the fixed response schema against the JSON-Schema metaschema on every
action call (41 % of the server's time in a py-spy profile of REST messages that call the action
server). Its event schema is a `oneOf` over 23 event types told apart only by `event: {const: ...}`,
so jsonschema also tried all 23 branches for every event (8 %).
How: the shared part is validated, then only the branch whose `const` matches - the same
accept/reject decision, since no other branch can match a given `event` value; jsonschema still
words the error of a rejected response. tests/rasa_patches/test_speedups.py compares accept/reject
and errors with Rasa's on generated responses.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from jsonschema import ValidationError, validators
from jsonschema.exceptions import best_match
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL

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


def install() -> None:
    RemoteAction._validate_action_result = _validate_action_result


__all__ = ["ValidationError", "install"]

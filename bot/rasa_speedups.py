"""Performance fixes for Rasa 3.6 internals, applied when the Rasa server loads our component.

Profiling `make run` with py-spy (REST messages that call the action server) showed 41 % of
the Rasa server's time in `jsonschema.validate()` inside `RemoteAction._validate_action_result`:
that helper re-checks the fixed response schema against the JSON-Schema metaschema on every
action call. Here the schema is checked and compiled once; every action response is still
validated against the same schema and an invalid one still raises the same `ValidationError`
(with Rasa's explanatory message).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jsonschema import ValidationError, validators
from jsonschema.exceptions import best_match
from rasa.core.actions.action import RemoteAction
from rasa.shared.constants import DOCS_BASE_URL

_PATCHED = "_crs_cached_validator"


@lru_cache(maxsize=1)
def _response_validator() -> Any:
    schema = RemoteAction.action_response_format_spec()
    cls = validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def _validate_action_result(self: RemoteAction, result: dict[str, Any]) -> bool:
    error = best_match(_response_validator().iter_errors(result))
    if error is not None:
        error.message += (
            ". Failed to validate Action server response from API, make sure your response from the Action "
            f"endpoint is valid. For more information about the format visit {DOCS_BASE_URL}/custom-actions"
        )
        raise error
    return True


def apply() -> None:
    """Idempotent: replace the per-call schema check with the cached validator."""
    if not getattr(RemoteAction, _PATCHED, False):
        RemoteAction._validate_action_result = _validate_action_result  # type: ignore[method-assign]
        setattr(RemoteAction, _PATCHED, True)


__all__ = ["ValidationError", "apply"]

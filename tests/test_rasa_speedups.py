"""The cached action-response validator still validates exactly like Rasa's."""

from __future__ import annotations

import pytest
from jsonschema import ValidationError
from rasa.core.actions.action import RemoteAction

import bot.nlu.rasa_component  # noqa: F401  (applies the speed-ups, as in the Rasa server)


def test_patch_is_applied() -> None:
    from bot import rasa_speedups

    assert RemoteAction._validate_action_result is rasa_speedups._validate_action_result


def test_valid_response_passes() -> None:
    ok = {"events": [{"event": "slot", "name": "x", "value": 1}], "responses": [{"text": "hi"}]}
    assert RemoteAction._validate_action_result(None, ok) is True  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [{"events": "not a list"}, {"events": [{"no_event_key": 1}]}, {"responses": 5}])
def test_invalid_response_is_rejected_with_rasa_message(bad: dict) -> None:
    with pytest.raises(ValidationError, match="Failed to validate Action server response"):
        RemoteAction._validate_action_result(None, bad)  # type: ignore[arg-type]

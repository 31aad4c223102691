"""`Policy.format_tracker_states` only when its debug line is written.

Replaces: `RulePolicy` formatted the dialogue states as text for a debug log line at every
prediction, whether or not debug logging is on (4 % of the server's time).
"""

from __future__ import annotations

import logging

from rasa.core.policies.policy import Policy

STOCK_FORMAT_STATES = Policy.format_tracker_states


def _format_tracker_states(states: list[dict]) -> str:
    """`Policy.format_tracker_states`, for the debug log only: empty when it is not written."""
    if logging.getLogger("rasa.core.policies.rule_policy").isEnabledFor(logging.DEBUG):
        return STOCK_FORMAT_STATES(states)
    return ""


def install() -> None:
    Policy.format_tracker_states = staticmethod(_format_tracker_states)

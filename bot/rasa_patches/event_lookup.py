"""`Event.resolve_by_type` with its subclass walk cached.

Replaces: Rasa walked every `Event` subclass (with `inspect.isabstract`) for each stored event it
deserialised (5 % of the server's time). The type-name → class map is now cached and rebuilt on
a miss, so events defined later (plugins) are still found; the first match wins, as in Rasa.
"""

from __future__ import annotations

import rasa.shared.utils.common
from rasa.shared.core.events import Event

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


def install() -> None:
    Event.resolve_by_type = staticmethod(_resolve_event_by_type)

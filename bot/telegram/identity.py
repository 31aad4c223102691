"""Telegram chat → Rasa sender id, pseudonymous and stable.

The tracker store and the clinic see `tg-<HMAC(chat id)>`, never the raw Telegram id; the relay
recomputes the same id from each update, so no lookup table is needed.
"""

from __future__ import annotations

import hashlib
import hmac


def sender_id(chat_id: int, key: str) -> str:
    digest = hmac.new(key.encode(), str(chat_id).encode(), hashlib.sha256).hexdigest()
    return f"tg-{digest[:24]}"

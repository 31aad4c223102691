"""Split replies longer than Telegram's 4,096-character message limit at natural boundaries.

Telegram counts the limit in UTF-16 code units (an emoji counts two), so we do too. A text is
cut at the last paragraph break, else line break, else sentence end, else space that keeps the
part under the limit; a single unbroken run is cut hard.
"""

from __future__ import annotations

from telegram.constants import MessageLimit

LIMIT = MessageLimit.MAX_TEXT_LENGTH
_BREAKS = ("\n\n", "\n", ". ", "! ", "? ", " ")


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _prefix_within(text: str, limit: int) -> int:
    """Largest number of characters from the start of `text` whose UTF-16 length is ≤ limit."""
    if utf16_len(text) <= limit:
        return len(text)
    lo, hi = 0, min(len(text), limit)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if utf16_len(text[:mid]) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _cut_point(window: str) -> int:
    """Where to cut a too-long text: the strongest boundary in the second half of `window`,
    else any boundary, else the window's end."""
    for floor in (len(window) // 2, 1):
        for boundary in _BREAKS:
            pos = window.rfind(boundary)
            if pos >= floor:
                return pos + len(boundary)
    return len(window)


def split_message(text: str, limit: int = LIMIT) -> list[str]:
    parts: list[str] = []
    rest = text.strip()
    while rest:
        size = _prefix_within(rest, limit)
        if size == len(rest):
            parts.append(rest)
            break
        cut = _cut_point(rest[:size])
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return [p for p in parts if p]

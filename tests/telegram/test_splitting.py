"""Long replies are split under Telegram's limit at natural boundaries, losing nothing."""

from __future__ import annotations

import pytest

from bot.telegram.splitting import LIMIT, split_message, utf16_len


def non_space(text: str) -> str:
    return "".join(text.split())


def test_short_text_is_one_message() -> None:
    assert split_message("Call 911 now.") == ["Call 911 now."]


@pytest.mark.parametrize(
    "text",
    [
        "word " * 3000,
        ("A sentence that ends here. " * 300 + "\n\n") * 3,
        "x" * 10_000,
        "😀" * 5000,
        "line\n" * 2000,
    ],
    ids=["words", "paragraphs", "unbroken", "emoji", "lines"],
)
def test_every_part_fits_and_nothing_is_lost(text: str) -> None:
    parts = split_message(text)
    assert len(parts) > 1
    assert all(0 < utf16_len(p) <= LIMIT for p in parts)
    assert non_space("".join(parts)) == non_space(text), "no character lost or added"


def test_prefers_paragraph_breaks() -> None:
    para = "Short sentence. " * 150  # ~2,400 characters
    parts = split_message(f"{para.strip()}\n\n{para.strip()}\n\n{para.strip()}")
    assert all(p.endswith("Short sentence.") for p in parts)
    assert len(parts) == 3


def test_sentence_end_before_plain_space() -> None:
    text = ("Call your care team. " * 250).strip()
    assert all(p.endswith(".") for p in split_message(text))


def test_emoji_counts_as_two_units() -> None:
    assert utf16_len("😀") == 2
    parts = split_message("😀" * 3000)
    assert [utf16_len(p) for p in parts] == [LIMIT, 6000 - LIMIT]

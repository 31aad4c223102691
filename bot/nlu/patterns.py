"""Compile the knowledge base's phrase syntax into spaCy Matcher token patterns.

Syntax (documented for clinicians at the top of data/phrasings.yml):
`word`, `a|b` (alternatives), `[a|b]` (optional), `...` (up to GAP other words, never across
punctuation), `pref*` (prefix). Words go through the same normaliser as the text, so a
pattern written "coughing" also matches "coughed". Alternatives that are several tokens
("can't" → can + not) expand into separate patterns.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import Any

GAP = 3
# A gap word is never punctuation nor a negation: "breathing is not ok" must not read as "breathing ... ok".
GAP_TOKEN = {"IS_PUNCT": False, "NORM": {"NOT_IN": ["not", "no", "never"]}, "OP": "?"}
TokenPattern = list[dict[str, Any]]
Tokenize = Callable[[str], list[str]]


class PatternError(ValueError):
    """A phrase in the knowledge base cannot be compiled; the message quotes it."""


def _slot_variants(part: str, tokenize: Tokenize, phrase: str) -> list[TokenPattern]:
    """All token-pattern fragments one space-separated part of a phrase can stand for."""
    optional = part.startswith("[") and part.endswith("]")
    if optional:
        part = part[1:-1]
    if not part or "[" in part or "]" in part:
        raise PatternError(f"bad brackets in phrase {phrase!r}")
    single: set[str] = set()
    prefixes: set[str] = set()
    multi: list[list[str]] = []
    for alt in part.split("|"):
        if not alt:
            raise PatternError(f"empty alternative in phrase {phrase!r}")
        if alt.endswith("*"):
            stem = alt[:-1].lower()
            if not stem or not re.fullmatch(r"[a-z0-9'-]+", stem):
                raise PatternError(f"bad prefix {alt!r} in phrase {phrase!r}")
            prefixes.add(stem)
            continue
        norms = tokenize(alt)
        if not norms:
            raise PatternError(f"alternative {alt!r} in phrase {phrase!r} has no words")
        if len(norms) == 1:
            single.add(norms[0])
        else:
            multi.append(norms)
    variants: list[TokenPattern] = []
    if prefixes:
        # A prefix is tested on the corrected word (kept in LEMMA, see bot/nlu/normalizer.py) and
        # on its lemma in NORM ("tired*" vs lemma "tire", "throw*" vs the word "threw").
        regex = "^(?:" + "|".join(re.escape(p) for p in sorted(prefixes)) + ")"
        variants.append([{"LEMMA": {"REGEX": regex}}])
        variants.append([{"NORM": {"REGEX": regex}}])
    if single:
        variants.append([{"NORM": {"IN": sorted(single)}}] if len(single) > 1 else [{"NORM": next(iter(single))}])
    variants.extend([[{"NORM": n} for n in norms] for norms in multi])
    if optional:
        if multi:
            variants.append([])
        else:
            variants = [[dict(tok, OP="?") for tok in v] for v in variants]
    return variants


def compile_phrase(phrase: str, tokenize: Tokenize) -> list[TokenPattern]:
    """Token patterns for one phrase; raises PatternError naming the phrase when malformed."""
    parts = phrase.split()
    if not parts or all(p == "..." for p in parts):
        raise PatternError(f"phrase {phrase!r} has no words")
    if parts[0] == "..." or parts[-1] == "...":
        raise PatternError(f"phrase {phrase!r} may not start or end with '...'")
    slots: list[list[TokenPattern]] = []
    for part in parts:
        if part == "...":
            slots.append([[dict(GAP_TOKEN) for _ in range(GAP)]])
        else:
            slots.append(_slot_variants(part, tokenize, phrase))
    patterns = []
    for combo in itertools.product(*slots):
        pattern = [tok for fragment in combo for tok in fragment]
        if any(tok.get("OP") != "?" for tok in pattern):
            patterns.append(pattern)
    if not patterns:
        raise PatternError(f"phrase {phrase!r} matches nothing")
    return patterns

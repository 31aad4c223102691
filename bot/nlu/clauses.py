"""Split a message into clauses: the unit the semantic layer compares by meaning.

A clause ends where language ends one: a sentence end, a new line, `;`, `:`, a comma, a dash,
or a contrast word ("but", "however", "although"). A long run-on clause (texting without
punctuation) is also cut before "and", "then", "so", "because", "when" or "while" once it has
enough words on each side. A fragment of one word joins its neighbour, so "my chest, heavy"
stays one thought.
"""

from __future__ import annotations

from spacy.tokens import Doc

BREAK_PUNCT = {".", "!", "?", ";", ":", ",", "—", "–", "-", "(", ")", "…", "..."}
CONTRAST = {"but", "however", "although", "though", "whereas", "except"}
RUN_ON = {"and", "then", "so", "because", "cause", "cuz", "when", "while", "after", "plus"}
LONG_CLAUSE = 12  # words: longer clauses are also cut at RUN_ON words
MIN_SIDE = 4  # words on each side of such a cut


def _breaks(doc: Doc, i: int) -> bool:
    tok = doc[i]
    if tok.text in ("-", "/") and i > 0 and not doc[i - 1].whitespace_ and not tok.whitespace_:
        return False  # inside a word: "car-t", "ide-cel", "on/off"
    return tok.is_space or "\n" in tok.text or tok.text in BREAK_PUNCT or tok.lower_ in CONTRAST


def _words(doc: Doc, a: int, b: int) -> int:
    return sum(1 for t in doc[a:b] if not t.is_punct and not t.is_space)


def clause_spans(doc: Doc) -> list[tuple[int, int]]:
    """Token spans [start, end) of the clauses of `doc`, in order; boundary tokens excluded."""
    spans: list[tuple[int, int]] = []
    start = 0
    for i, tok in enumerate(doc):
        hard = tok.is_sent_start and i > start
        if hard:
            spans.append((start, i))
            start = i
        if _breaks(doc, i):
            spans.append((start, i))
            start = i + 1
    spans.append((start, len(doc)))
    spans = [(a, b) for a, b in spans if _words(doc, a, b) > 0]
    cut: list[tuple[int, int]] = []
    for a, b in spans:
        cut.extend(_cut_run_on(doc, a, b))
    return _merge_fragments(doc, cut)


def _cut_run_on(doc: Doc, a: int, b: int) -> list[tuple[int, int]]:
    if _words(doc, a, b) <= LONG_CLAUSE:
        return [(a, b)]
    for i in range(a + 1, b - 1):
        if doc[i].lower_ in RUN_ON and _words(doc, a, i) >= MIN_SIDE and _words(doc, i + 1, b) >= MIN_SIDE:
            return [(a, i), *_cut_run_on(doc, i + 1, b)]
    return [(a, b)]


def _merge_fragments(doc: Doc, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    pending: int | None = None
    for a, b in spans:
        if pending is not None:
            a, pending = pending, None
        if _words(doc, a, b) < 2 and len(spans) > 1:
            if merged and merged[-1][1] >= a - 1 and not any("\n" in t.text for t in doc[merged[-1][1] : a]):
                merged[-1] = (merged[-1][0], b)
            else:
                pending = a
            continue
        merged.append((a, b))
    if pending is not None:
        merged.append((pending, len(doc)))
    return merged

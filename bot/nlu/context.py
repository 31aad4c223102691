"""ConText-style assertion: which symptom mentions are negated, hypothetical, about someone else.

After medspaCy's ConText: rules (data/language.yml) are phrases with a category and a
direction; a trigger's scope runs through its clause until a terminator for its category, a
hard boundary or `max_scope` words. Overlapping triggers resolve longest-first, so a pseudo
trigger ("not sure") hides the shorter real one ("not") inside it. A trigger inside the mention
itself never modifies it: "can't catch my breath" is not a negated breath.
"""

from __future__ import annotations

from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

from spacy.tokens import Doc, Span

from bot.clinical.knowledge import ContextRule

HARD_BOUNDARY = {".", ";", "!", "?"}
BACKWARD_BOUNDARY = HARD_BOUNDARY | {","}


@dataclass(frozen=True)
class Trigger:
    start: int
    end: int
    rule: ContextRule

    @property
    def category(self) -> str:
        return self.rule.category


def resolve_overlaps(triggers: list[Trigger], doc: Doc | None = None) -> list[Trigger]:
    """Longest trigger wins where two overlap (then the earlier one). Terminators are kept
    whatever overlaps them: "she" both names someone else and ends a negation. So is a trigger
    of the same category pointing the other way when words follow it: in "sorry: NO FEVER" the
    backward ": no" (for "fever: no") must not swallow the forward "no" ("fever: no, cough:
    yes" keeps only the backward one)."""
    kept: list[Trigger] = [t for t in triggers if t.category == "terminate"]
    taken: dict[int, Trigger] = {}
    for t in sorted((t for t in triggers if t.category != "terminate"), key=lambda t: (-(t.end - t.start), t.start)):
        overlapped = {id(taken[i]): taken[i] for i in range(t.start, t.end) if i in taken}.values()
        opposite = all(
            o.rule.category == t.rule.category and o.rule.direction != t.rule.direction and o.end - o.start > t.end - t.start
            for o in overlapped
        )
        if not overlapped or (opposite and doc is not None and t.end < len(doc) and doc[t.end].is_alpha):
            kept.append(t)
            taken.update(dict.fromkeys(range(t.start, t.end), t))
    return sorted(kept, key=lambda t: t.start)


def _is_boundary(doc: Doc, i: int, boundaries: set[str]) -> bool:
    tok = doc[i]
    return tok.text in boundaries or "\n" in tok.text


class ContextScopes:
    """Computes trigger scopes for one doc and answers "is token i under category c?".

    Scopes stop where language stops: a sentence end, a new line, a terminator ("but"), and a
    comma unless a list of symptoms runs on after it ("no fever, cough or rash"). A negation
    reaches a therapy only when no symptom stands between them ("not hungry and on Keytruda"
    keeps the therapy), and is spent on a therapy it negates ("not on immunotherapy, headache").
    """

    def __init__(
        self,
        doc: Doc,
        triggers: list[Trigger],
        default_max_scope: int,
        therapies: Sequence[tuple[int, int]] = (),
        symptom_starts: AbstractSet[int] = frozenset(),
        symptom_tokens: AbstractSet[int] = frozenset(),
        complaint_words: frozenset[str] = frozenset(),
    ) -> None:
        self.doc = doc
        self.triggers = triggers
        self.default_max_scope = default_max_scope
        self.symptom_starts = symptom_starts
        self.symptom_tokens = symptom_tokens
        self.complaint_words = complaint_words
        self.therapy_starts = {s for s, _ in therapies}
        self.therapy_ends = {e for _, e in therapies}
        # terminators per token: direction → categories it ends
        self.terminators: dict[int, dict[str, set[str]]] = {}
        for _, e in therapies:
            if not self._list_of_therapies_runs_on(e):
                self._add_terminator(e, ("negated",), "both")
        for t in triggers:
            if t.category == "terminate":
                for i in range(t.start, t.end):
                    self._add_terminator(i, t.rule.ends, t.rule.direction)
        self.scopes: list[tuple[Trigger, set[int]]] = [(t, self._scope(t)) for t in triggers if t.category not in ("terminate", "pseudo")]

    def _add_terminator(self, i: int, categories: tuple[str, ...], direction: str) -> None:
        entry = self.terminators.setdefault(i, {"forward": set(), "backward": set()})
        for d in ("forward", "backward"):
            if direction in (d, "both"):
                entry[d].update(categories)

    def _ends(self, i: int, category: str, direction: str) -> bool:
        return category in self.terminators.get(i, {}).get(direction, ())

    def _past(self, i: int, stop: int, joining: tuple[str, ...]) -> int:
        """The first token from i on (before stop) that is not a joining word or a space."""
        while i < stop and (self.doc[i].lower_ in joining or self.doc[i].is_space):
            i += 1
        return i

    def _list_of_therapies_runs_on(self, end: int) -> bool:
        """After a therapy, does a list of therapies continue ("no treatment or immunotherapy")?"""
        i = self._past(end, min(len(self.doc), end + 3), ("or", "nor", ",", "any", "other"))
        return i > end and i in self.therapy_starts

    def _list_runs_on(self, comma: int, end: int) -> bool:
        """After a comma, does a list of symptoms continue ("no fever, cough or rash")?"""
        return self._past(comma + 1, end, ("or", "and", "nor", "no")) in self.symptom_starts

    def _scope(self, t: Trigger) -> set[int]:
        doc, limit = self.doc, t.rule.max_scope or self.default_max_scope
        sent = doc[t.start].sent
        scope: set[int] = set()
        if t.rule.direction in ("forward", "both"):
            words = 0
            for i in range(t.end, sent.end):
                if _is_boundary(doc, i, HARD_BOUNDARY) or self._ends(i, t.category, "forward") or words >= limit:
                    break
                if doc[i].text == "," and not self._list_runs_on(i, sent.end):
                    break
                if t.category == "negated" and i in self.therapy_starts and any(k in self.symptom_tokens for k in range(t.end, i)):
                    break
                scope.add(i)
                words += not doc[i].is_punct
        if t.rule.direction in ("backward", "both"):
            words = 0
            for i in range(t.start - 1, sent.start - 1, -1):
                if _is_boundary(doc, i, BACKWARD_BOUNDARY) or self._ends(i, t.category, "backward") or words >= limit:
                    break
                scope.add(i)
                words += not doc[i].is_punct
        return scope

    def clause_denial(self, start: int, end: int, lead: int = 3) -> Trigger | None:
        """A negation that denies a whole clause: it opens the clause ("no trouble getting my
        words out", "I'm not seeing things") or closes it ("seeing things: none"). A negation in
        the middle ("people who aren't there") is part of what the clause describes."""
        words = [i for i in range(start, end) if not self.doc[i].is_punct and not self.doc[i].is_space]
        head, tail = set(words[:lead]), set(words[-2:])
        for trig, scope in self.scopes:
            if trig.category != "negated" or not any(start <= i < end for i in scope):
                continue
            if trig.start in head or (trig.start < start and trig.rule.direction != "backward"):
                return trig
            if trig.rule.direction == "backward" and (trig.start in tail or trig.start >= end):
                return trig
            # a complaint word denied at the end of the clause: "her chest doesn't hurt" (not "the
            # words are not clear", not "people who aren't there")
            if trig.end == words[-1] and self.doc[words[-1]].lower_ in self.complaint_words:
                return trig
        return None

    def covering(self, start: int, end: int) -> dict[str, Trigger]:
        """The categories whose scope reaches into tokens [start, end) (a whole clause)."""
        found: dict[str, Trigger] = {}
        for trig, scope in self.scopes:
            if any(start <= i < end for i in scope):
                found.setdefault(trig.category, trig)
        return found

    def modifiers(self, span: Span | tuple[int, int]) -> dict[str, Trigger]:
        """The categories modifying a mention (start token in scope, trigger outside it)."""
        start, end = (span.start, span.end) if isinstance(span, Span) else span
        found: dict[str, Trigger] = {}
        for trig, scope in self.scopes:
            if start in scope and (trig.end <= start or trig.start >= end):
                found.setdefault(trig.category, trig)
        return found

    def in_message(self, category: str) -> list[Trigger]:
        return [t for t in self.triggers if t.category == category]

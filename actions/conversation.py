"""Conversation state for triage: read from slots, updated by one message's entities.

Pure functions (no rasa_sdk), so the accumulation rules are unit-tested directly: symptoms
accumulate across messages, a later denial moves a symptom to `denied_symptoms` (and a later
report moves it back), the triage level only ever goes up until /restart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from actions.triage import Assessment, assess, higher
from bot.clinical.knowledge import KnowledgeBase


@dataclass(frozen=True)
class MessageFindings:
    """What one user message said, read back from the extractor's entities."""

    present: dict[str, str] = field(default_factory=dict)  # symptom → evidence
    absent: dict[str, str] = field(default_factory=dict)
    hypothetical: list[str] = field(default_factory=list)
    worsening: list[str] = field(default_factory=list)
    on_immunotherapy: bool | None = None
    therapy: str | None = None
    therapy_kind: str | None = None
    therapy_when: str | None = None
    possible: list[tuple[str, str, float]] = field(default_factory=list)  # (symptom, words, similarity), best first

    @classmethod
    def from_entities(cls, entities: Iterable[Mapping[str, Any]], kb: KnowledgeBase) -> MessageFindings:
        present: dict[str, str] = {}
        absent: dict[str, str] = {}
        hypothetical: list[str] = []
        worsening: list[str] = []
        therapies_on: list[Mapping[str, Any]] = []
        therapies_off = False
        possible: list[tuple[str, str, float]] = []
        for e in entities:
            kind, value, role = e.get("entity"), e.get("value"), e.get("role")
            if kind == "symptom" and value in kb.symptoms:
                evidence = str(e.get("evidence") or "")
                if role == "present":
                    present.setdefault(value, evidence)
                elif role == "absent":
                    absent.setdefault(value, evidence)
                elif role == "hypothetical" and value not in hypothetical:
                    hypothetical.append(value)
            elif kind == "therapy":
                if role == "present" and e.get("kind") != "denial_only":
                    therapies_on.append(e)
                elif role == "absent":
                    therapies_off = True
            elif kind == "worsening":
                worsening.append(str(value))
            elif kind == "possible_symptom" and value in kb.symptoms:
                try:
                    similarity = float(e.get("score") or 0.0)
                except (TypeError, ValueError):
                    similarity = 0.0
                possible.append((str(value), str(e.get("text") or "")[:200], similarity))
        absent = {s: ev for s, ev in absent.items() if s not in present}
        hypothetical = [s for s in hypothetical if s not in present and s not in absent]
        named = [t for t in therapies_on if t.get("kind") and t.get("value") != t.get("kind")]
        best = named[0] if named else (therapies_on[0] if therapies_on else None)
        return cls(
            present=present,
            absent=absent,
            hypothetical=hypothetical,
            worsening=worsening,
            on_immunotherapy=True if therapies_on else (False if therapies_off else None),
            therapy=str(best.get("name")) if best else None,
            therapy_kind=str(best.get("kind")) if best else None,
            therapy_when=next((str(t["when"]) for t in therapies_on if t.get("when")), None),
            possible=sorted((p for p in possible if p[0] not in present and p[0] not in absent), key=lambda p: -p[2]),
        )

    @property
    def mentions_symptoms(self) -> bool:
        return bool(self.present or self.absent or self.worsening)


@dataclass(frozen=True)
class TriageState:
    """The triage-relevant slots of one conversation."""

    level: str = "none"
    symptoms: tuple[str, ...] = ()
    denied: tuple[str, ...] = ()
    on_immunotherapy: bool | None = None
    therapy: str | None = None
    therapy_kind: str | None = None
    therapy_when: str | None = None
    worsening: bool = False
    reasons: tuple[str, ...] = ()
    evidence: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_slots(cls, slots: Mapping[str, Any]) -> TriageState:
        return cls(
            level=slots.get("triage_level") or "none",
            symptoms=tuple(slots.get("symptoms") or ()),
            denied=tuple(slots.get("denied_symptoms") or ()),
            on_immunotherapy=slots.get("on_immunotherapy"),
            therapy=slots.get("therapy"),
            therapy_kind=slots.get("therapy_kind"),
            therapy_when=slots.get("therapy_when"),
            worsening=bool(slots.get("worsening")),
            reasons=tuple(slots.get("triage_reasons") or ()),
            evidence=dict(slots.get("symptom_evidence") or {}),
        )

    def to_slots(self) -> dict[str, Any]:
        return {
            "triage_level": self.level,
            "symptoms": list(self.symptoms),
            "denied_symptoms": list(self.denied),
            "on_immunotherapy": self.on_immunotherapy,
            "therapy": self.therapy,
            "therapy_kind": self.therapy_kind,
            "therapy_when": self.therapy_when,
            "worsening": self.worsening,
            "triage_reasons": list(self.reasons),
            "symptom_evidence": dict(self.evidence),
        }

    def with_therapy(self, on: bool | None, therapy: str | None = None, kind: str | None = None, when: str | None = None) -> TriageState:
        if on is None or (on is False and self.on_immunotherapy is True):
            return self  # a therapy once named stays: a later "not on anything" may be about something else (safety)
        return replace(
            self,
            on_immunotherapy=on,
            therapy=therapy or (self.therapy if on else None),
            therapy_kind=kind or (self.therapy_kind if on else None),
            therapy_when=when or (self.therapy_when if on else None),
        )

    def with_findings(self, f: MessageFindings) -> TriageState:
        state = self.with_therapy(f.on_immunotherapy, f.therapy, f.therapy_kind, f.therapy_when)
        symptoms = [s for s in state.symptoms if s not in f.absent] + [s for s in f.present if s not in state.symptoms]
        denied = [s for s in state.denied if s not in f.present] + [s for s in f.absent if s not in state.denied]
        evidence = {**state.evidence, **f.present}
        if f.worsening:
            evidence["worsening"] = f'said "{f.worsening[0]}"'
        return replace(
            state,
            symptoms=tuple(symptoms),
            denied=tuple(s for s in denied if s not in symptoms),
            worsening=state.worsening or bool(f.worsening),
            evidence=evidence,
        )

    def assessed(self, kb: KnowledgeBase) -> tuple[TriageState, Assessment]:
        """Re-run the rules on everything known; the level never goes down. A symptom another
        present one subsumes is dropped across messages too ("temp 101" then "now 103.5": a very
        high fever, not a fever and a very high fever), as within one message."""
        subsumed = {sub for sid in self.symptoms if sid in kb.symptoms for sub in kb.symptoms[sid].subsumes}
        # and back when the one that subsumed it is denied later ("fever", "103.5", "not that high now")
        revived = [
            sub
            for sid in self.denied
            if sid in kb.symptoms
            for sub in kb.symptoms[sid].subsumes
            if sub in self.evidence and sub not in self.denied and sub not in self.symptoms
        ]
        state = replace(self, symptoms=tuple(s for s in self.symptoms if s not in subsumed) + tuple(dict.fromkeys(revived)))
        result = assess(kb, state.symptoms, state.on_immunotherapy, state.worsening, state.evidence)
        reasons = list(state.reasons)
        for r in result.reasons:
            if r.text() not in reasons:
                reasons.append(r.text())
        return replace(state, level=higher(state.level, result.level), reasons=tuple(reasons)), result


def labels(kb: KnowledgeBase, ids: Iterable[str]) -> str:
    """ "fever, cough and rash" from symptom ids."""
    names = [kb.symptoms[i].label for i in ids if i in kb.symptoms]
    if not names:
        return ""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def responders_note(state: TriageState) -> str:
    """What to tell the ambulance crew: immunotherapy, which drug, when."""
    if state.on_immunotherapy:
        what = state.therapy or "immunotherapy"
        when = f", last given {state.therapy_when}" if state.therapy_when else ""
        return f"you are on immunotherapy ({what}{when}) and this may be cytokine release syndrome (CRS)."
    if state.on_immunotherapy is False:
        return "your symptoms and any medicines you take."
    return "any immunotherapy you have had (which drug and when), as this may be cytokine release syndrome (CRS)."

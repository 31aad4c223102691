"""The escalation rules, as plain functions over the knowledge base (no Rasa here).

SPEC "Triage levels": emergency symptom → emergency; serious → urgent; mild → urgent when on
immunotherapy or status unknown, monitor when not; anything worsening → at least urgent;
nothing current → none. Which class a symptom has and what each class means are read from
data/clinical.yml, so a clinic changes the rules there. Every decision carries its reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bot.clinical.knowledge import LEVEL_RANK as RANK
from bot.clinical.knowledge import KnowledgeBase


def higher(a: str, b: str) -> str:
    """The more severe of two levels (unknown strings count as `none`)."""
    return a if RANK.get(a, 0) >= RANK.get(b, 0) else b


@dataclass(frozen=True)
class Reason:
    symptom: str | None
    level: str
    rule: str
    evidence: str = ""

    def text(self) -> str:
        """One line a clinician reads: evidence → symptom → level (rule)."""
        parts = [p for p in (self.evidence, self.symptom) if p]
        return " → ".join(parts + [self.level]) + f" ({self.rule})"


@dataclass(frozen=True)
class Assessment:
    level: str
    reasons: tuple[Reason, ...] = field(default_factory=tuple)

    def reasons_at(self, level: str) -> list[Reason]:
        return [r for r in self.reasons if r.level == level]


def status_key(on_immunotherapy: bool | None) -> str:
    if on_immunotherapy is None:
        return "level_status_unknown"
    return "level_on_immunotherapy" if on_immunotherapy else "level_not_on_immunotherapy"


def symptom_level(kb: KnowledgeBase, symptom: str, on_immunotherapy: bool | None) -> tuple[str, str]:
    """(level, rule) for one present symptom given the immunotherapy status."""
    cls = kb.symptom_class(symptom)
    rule_table = kb.classes[cls]
    if "level" in rule_table:
        return rule_table["level"], f"{cls} symptom"
    key = status_key(on_immunotherapy)
    status = {
        "level_status_unknown": "immunotherapy status unknown",
        "level_on_immunotherapy": "on immunotherapy",
        "level_not_on_immunotherapy": "not on immunotherapy",
    }[key]
    return rule_table[key], f"{cls} symptom, {status}"


def assess(
    kb: KnowledgeBase,
    present: Iterable[str],
    on_immunotherapy: bool | None,
    worsening: bool = False,
    evidence: Mapping[str, str] | None = None,
) -> Assessment:
    """The triage level for the symptoms present now, with one reason per symptom."""
    evidence = evidence or {}
    reasons: list[Reason] = []
    level = "none"
    for symptom in sorted(set(present)):
        if symptom not in kb.symptoms:
            continue
        s_level, rule = symptom_level(kb, symptom, on_immunotherapy)
        if worsening and RANK[s_level] < RANK[kb.worsening_level]:
            s_level, rule = kb.worsening_level, "getting worse or not improving"
        reasons.append(Reason(symptom, s_level, rule, evidence.get(symptom, "")))
        level = higher(level, s_level)
    if worsening and not reasons:
        reasons.append(Reason(None, kb.worsening_level, "feels worse, no symptom named", evidence.get("worsening", "")))
        level = higher(level, kb.worsening_level)
    return Assessment(level, tuple(sorted(reasons, key=lambda r: -RANK[r.level])))


def emergency_signs(kb: KnowledgeBase) -> list[str]:
    """Emergency symptom ids in knowledge-base order (for screening questions and help)."""
    return kb.ids_of_class("emergency")

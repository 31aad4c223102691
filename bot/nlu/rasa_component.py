"""Rasa 3 graph component: runs the SymptomExtractor on every message.

It adds `symptom` entities (role = present / absent / hypothetical, plus the evidence), a
`therapy` entity per immunotherapy mention, a `vital` entity per reading (temperature, pulse,
blood pressure, SpO2 with its unit: the clinic charts them) and a `worsening` entity, and — because a missed
emergency is the worst bug — it routes the message by what was found, whatever the intent
classifier guessed: any present/denied symptom or worsening → `report_symptoms`; therapy words
only → `inform_therapy` (unless the classifier chose a CRS question); only hypothetical symptoms ("what if my heart races?") →
`ask_symptom_advice` unless the classifier already chose a CRS question intent.
"""

from __future__ import annotations

from typing import Any

from rasa.engine.graph import ExecutionContext, GraphComponent
from rasa.engine.recipes.default_recipe import DefaultV1Recipe
from rasa.engine.storage.resource import Resource
from rasa.engine.storage.storage import ModelStorage
from rasa.nlu.extractors.extractor import EntityExtractorMixin
from rasa.shared.nlu.constants import ENTITIES, INTENT, INTENT_RANKING_KEY, TEXT
from rasa.shared.nlu.training_data.message import Message

from bot.clinical.knowledge import load_knowledge_base, load_language_rules
from bot.nlu.extractor import ABSENT, HYPOTHETICAL, PRESENT, Findings, SymptomExtractor

# The Rasa patches are installed by `python -m bot rasa` (bot/rasa_patches), not on import.

EXTRACTOR_NAME = "CRSSymptomExtractor"


def findings_to_entities(findings: Findings) -> list[dict[str, Any]]:
    """Rasa entity dicts for everything the extractor found (JSON-safe, stored in the tracker)."""
    entities: list[dict[str, Any]] = []
    for m in findings.mentions:
        entities.append(
            {
                "entity": "symptom",
                "value": m.symptom,
                "role": m.assertion,
                "start": m.start,
                "end": m.end,
                "text": m.text,
                "evidence": m.evidence,
                "source": m.source,
                "experiencer": m.experiencer,
                "cue": m.cue,
                "confidence_entity": 1.0,
                "extractor": EXTRACTOR_NAME,
            }
        )
    for t in findings.therapies:
        entities.append(
            {
                "entity": "therapy",
                "value": t.therapy or t.kind,
                "role": t.assertion,
                "start": t.start,
                "end": t.end,
                "text": t.text,
                "name": t.name,
                "kind": t.kind,
                "when": t.when,
                "confidence_entity": 1.0,
                "extractor": EXTRACTOR_NAME,
            }
        )
    for q in findings.questions:
        entities.append(
            {
                "entity": "possible_symptom",
                "value": q.symptom,
                "start": q.start,
                "end": q.end,
                "text": q.text,
                "score": q.score,
                "confidence_entity": q.score,
                "extractor": EXTRACTOR_NAME,
            }
        )
    for v, context in zip(findings.vitals, findings.vital_contexts or ["measured"] * len(findings.vitals), strict=True):
        # the reading itself, kept with the message so the clinic can chart it (role: measured,
        # or hypothetical / past / not_patient when it is no reading of the patient now)
        entities.append(
            {
                "entity": "vital", "value": v.value, "role": context, "kind": v.kind, "unit": v.unit, "value_c": v.value_c,
                "diastolic": v.diastolic, "start": v.start, "end": v.end, "text": v.text,
                "confidence_entity": 1.0, "extractor": EXTRACTOR_NAME,
            }
        )  # fmt: skip
    for cue in findings.worsening:
        entities.append({"entity": "worsening", "value": cue, "confidence_entity": 1.0, "extractor": EXTRACTOR_NAME})
    return entities


def route_intent(findings: Findings, predicted: str | None, config: dict[str, Any]) -> str | None:
    """The intent to force from what the extractor found, or None to keep the classifier's."""
    assertions = {m.assertion for m in findings.mentions}
    if assertions & {PRESENT, ABSENT} or findings.worsening or findings.questions:
        return config["symptom_intent"]
    if any(t.assertion in (PRESENT, ABSENT) for t in findings.therapies) and predicted not in config["question_intents"]:
        return config["therapy_intent"]  # "does blinatumomab cause CRS" stays a question
    if HYPOTHETICAL in assertions and predicted not in config["question_intents"]:
        return config["hypothetical_intent"]
    return None


@DefaultV1Recipe.register(
    [DefaultV1Recipe.ComponentType.ENTITY_EXTRACTOR, DefaultV1Recipe.ComponentType.INTENT_CLASSIFIER],
    is_trainable=False,
)
class CRSSymptomExtractor(GraphComponent, EntityExtractorMixin):
    """Symptom, vital-sign and therapy extraction from the knowledge base (data/clinical.yml, data/phrasings.yml; see module doc)."""

    @staticmethod
    def get_default_config() -> dict[str, Any]:
        return {
            "knowledge_base": "",  # empty: $CRS_KNOWLEDGE_BASE or data/clinical.yml
            "language_rules": "",  # empty: $CRS_LANGUAGE_RULES or data/language.yml
            "symptom_intent": "report_symptoms",
            "therapy_intent": "inform_therapy",
            "hypothetical_intent": "ask_symptom_advice",
            "question_intents": [],
        }

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        kb = load_knowledge_base(config.get("knowledge_base") or None)
        rules = load_language_rules(config.get("language_rules") or None)
        self.extractor = SymptomExtractor(kb, rules)

    @classmethod
    def create(
        cls,
        config: dict[str, Any],
        model_storage: ModelStorage,
        resource: Resource,
        execution_context: ExecutionContext,
    ) -> CRSSymptomExtractor:
        return cls(config)

    def process(self, messages: list[Message]) -> list[Message]:
        for message in messages:
            findings = self.extractor(message.get(TEXT) or "")
            entities = findings_to_entities(findings)
            if entities:
                message.set(ENTITIES, list(message.get(ENTITIES, [])) + entities, add_to_output=True)
            predicted = (message.get(INTENT) or {}).get("name")
            forced = route_intent(findings, predicted, self.config)
            if forced and forced != predicted:
                intent = {"name": forced, "confidence": 1.0}
                ranking = [r for r in message.get(INTENT_RANKING_KEY, []) or [] if r.get("name") != forced]
                message.set(INTENT, intent, add_to_output=True)
                message.set(INTENT_RANKING_KEY, [intent] + ranking, add_to_output=True)
        return messages

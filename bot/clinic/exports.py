"""Exports: CSV of the conversation list and of one conversation; a FHIR R4 Bundle per conversation.

The Bundle (type `collection`) holds the Patient (pseudonymous identifier, or the clinic's
label for enrolled patients), one Observation per symptom reported present
(`valueBoolean: true`) or denied (`valueBoolean: false`), and one Observation for the triage
outcome with its reasons as notes. Symptom codes use the project's own code system
(`SYMPTOM_SYSTEM`): the SPEC's symptom ids.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from bot.clinic.conversations import Conversation, Row, symptom_label

SYMPTOM_SYSTEM = "https://crs-checker.example/fhir/CodeSystem/symptom"
TRIAGE_SYSTEM = "https://crs-checker.example/fhir/CodeSystem/triage-level"
PATIENT_SYSTEM = "https://crs-checker.example/fhir/NamingSystem/patient"
CATEGORY = {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "survey", "display": "Survey"}


def iso(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z") if ts else ""


def _csv(rows: Iterable[list[Any]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()


def _cell(value: Any) -> Any:
    """Spreadsheet formula injection guard: a cell starting with = + - @ is prefixed with '."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def list_csv(rows: Iterable[Row]) -> Iterator[str]:
    header = ["patient", "linked", "therapy", "first_message_utc", "last_message_utc", "highest_level", "symptoms", "patient_messages"]
    body = (
        [r.patient, "yes" if r.linked else "no", r.therapy, iso(r.first_at), iso(r.last_at), r.level, " ".join(r.symptoms), r.messages]
        for r in rows
    )
    return _csv([header, *body])


def conversation_csv(conv: Conversation) -> Iterator[str]:
    header = ["time_utc", "from", "text", "symptoms_present", "symptoms_denied", "level_after", "reasons"]
    body = ([iso(t.at), t.who, t.text, " ".join(t.present), " ".join(t.denied), t.level or "", " | ".join(t.reasons)] for t in conv.turns)
    return _csv([header, *body])


def fhir_bundle(conv: Conversation, now: float) -> dict[str, Any]:
    patient_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"crs-patient:{conv.sender_id}"))
    patient_ref = {"reference": f"urn:uuid:{patient_id}", "display": conv.patient}
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"urn:uuid:{patient_id}",
            "resource": {
                "resourceType": "Patient",
                "id": patient_id,
                "identifier": [{"system": PATIENT_SYSTEM, "value": conv.patient}],
                "active": True,
            },
        }
    ]
    last_at = max((t.at for t in conv.turns if t.at), default=now)
    effective = iso(last_at)

    def observation(key: str, resource: dict[str, Any]) -> None:
        oid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"crs-obs:{conv.sender_id}:{key}"))
        entries.append({"fullUrl": f"urn:uuid:{oid}", "resource": {"resourceType": "Observation", "id": oid, **resource}})

    for present, ids in ((True, conv.symptoms), (False, conv.denied)):
        for sid in ids:
            observation(
                f"{sid}:{present}",
                {
                    "status": "final",
                    "category": [{"coding": [CATEGORY]}],
                    "code": {
                        "coding": [{"system": SYMPTOM_SYSTEM, "code": sid, "display": symptom_label(sid)}],
                        "text": symptom_label(sid),
                    },
                    "subject": patient_ref,
                    "effectiveDateTime": effective,
                    "valueBoolean": present,
                },
            )
    reasons = [r for t in conv.turns for r in t.reasons]
    observation(
        "triage",
        {
            "status": "final",
            "category": [{"coding": [CATEGORY]}],
            "code": {
                "coding": [{"system": TRIAGE_SYSTEM, "code": "triage-level", "display": "CRS triage level"}],
                "text": "CRS triage level",
            },
            "subject": patient_ref,
            "effectiveDateTime": effective,
            "valueCodeableConcept": {"coding": [{"system": TRIAGE_SYSTEM, "code": conv.level, "display": conv.level}], "text": conv.level},
            "note": [{"text": r} for r in reasons] or None,
        },
    )
    entries[-1]["resource"] = {k: v for k, v in entries[-1]["resource"].items() if v is not None}
    return {
        "resourceType": "Bundle",
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"crs-bundle:{conv.sender_id}:{last_at}")),
        "type": "collection",
        "timestamp": iso(now),
        "entry": entries,
    }

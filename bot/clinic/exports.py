"""Exports: CSV of the conversation list and of one conversation; a FHIR R4 Bundle per conversation.

`fhir_bundle` gives a `collection` (a document to read or archive) or a `transaction` (to POST to
an EHR's FHIR endpoint). Each resource type is the one an EHR files that fact under:

- Patient: the subject everything points at, identified under the clinic's own identifier system
  by the enrolment code (unique to one patient), else by the unlinked chat's pseudonym. Never by
  the clinic's label: "Ward 7 bed 3" is not unique and passes to the next patient in that bed, so
  matching on it would file one patient's findings in another's chart; it is only the reference's
  `display`, and not a `name` (a bed is not a name).
- Observation, category `survey`, the symptom's SNOMED CT finding code, and as its value the SNOMED
  CT qualifier value Present (52101004) or Absent (2667000): a symptom the patient reported or
  denied is a patient-reported finding; SNOMED CT is what problem lists and clinical decision
  support read. An EHR that indexes Observations by code alone would list a denied symptom as
  present if "denied" were only a `valueBoolean: false` next to the finding code; a coded Absent is
  what problem-list and decision-support rules test for, and keeps "denied" apart from "never asked".
- Observation, category `vital-signs` (US Core / FHIR vital-signs profiles, LOINC, UCUM): the
  readings the patient typed land in the EHR's vitals flowsheet only when coded that way.
- MedicationStatement: the immunotherapy is what the patient or the enrolment says they had, not
  an order the clinic placed through this tool; RxNorm where the knowledge base has the code.
- RiskAssessment: the triage level is a judgement of risk with reasons, not a measurement of the
  patient; its qualitative risk uses HL7's risk-probability codes, its basis the present findings.
- Communication (+ one Device): each message of the transcript, so the chart shows what was
  said and by whom; the assistant is software, hence a Device rather than a Practitioner,
  identified by a `urn:uuid:` URI (system `urn:ietf:rfc:3986`), as the Bundle is.

In the transaction, Patient and Device outlive one conversation and are conditional creates (POST
with `ifNoneExist` on their identifier), so a re-export finds the existing ones. Every other
resource is a PUT to `<type>/<id>` with its deterministic id (a uuid5 of the conversation and
what the resource is about): an update is idempotent, so exporting a conversation again, or
after it went on, updates the resources the first export made instead of filing duplicates
(a plain POST would create every Observation and message again).
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from bot.clinic.labels import pseudonym, symptom_label
from bot.clinic.queries import Row
from bot.clinic.transcript import Conversation, Turn
from bot.clinical.knowledge import load_knowledge_base

SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
RISK_PROBABILITY = "http://terminology.hl7.org/CodeSystem/risk-probability"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
BASE_PROFILE = "http://hl7.org/fhir/StructureDefinition/"
SURVEY = {"coding": [{"system": OBSERVATION_CATEGORY, "code": "survey", "display": "Survey"}]}
VITAL_SIGNS = {"coding": [{"system": OBSERVATION_CATEGORY, "code": "vital-signs", "display": "Vital Signs"}]}
# Triage level -> HL7 risk-probability (code, display).
RISK = {
    "emergency": ("high", "High likelihood"),
    "urgent": ("moderate", "Moderate likelihood"),
    "monitor": ("low", "Low likelihood"),
    "none": ("negligible", "Negligible likelihood"),
}
ASSISTANT_ID = "crs-symptom-checker"  # what the assistant Device's deterministic id is made from
URI = "urn:ietf:rfc:3986"  # identifier system whose values are URIs (here `urn:uuid:`s)
# SNOMED CT qualifier values for a finding's presence: the Observation's value, its `code` being the finding.
PRESENT = {"coding": [{"system": SNOMED, "code": "52101004", "display": "Present"}], "text": "present"}
ABSENT = {"coding": [{"system": SNOMED, "code": "2667000", "display": "Absent"}], "text": "absent"}


@dataclass(frozen=True)
class VitalKind:
    """How one kind of reading is coded: LOINC codings (the profile's own first), the unit, and the profiles it meets."""

    codings: tuple[tuple[str, str], ...]
    text: str
    unit: str  # the reading's unit when the patient gives none that matters (temperatures keep theirs)
    profiles: tuple[str, ...]


# The US Core (and base FHIR) vital-signs profiles: each fixes the LOINC code and the UCUM unit.
VITALS = {
    "temperature": VitalKind((("8310-5", "Body temperature"),), "Body temperature", "C", ("us-core-body-temperature", "bodytemp")),
    "pulse": VitalKind((("8867-4", "Heart rate"),), "Heart rate", "/min", ("us-core-heart-rate", "heartrate")),
    "spo2": VitalKind(
        (("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"), ("2708-6", "Oxygen saturation in Arterial blood")),
        "Oxygen saturation",
        "%",
        ("us-core-pulse-oximetry", "oxygensat"),
    ),
    "blood_pressure": VitalKind(
        (("85354-9", "Blood pressure panel with all children optional"),), "Blood pressure", "mmHg", ("us-core-blood-pressure", "bp")
    ),
}
SYSTOLIC = ("8480-6", "Systolic blood pressure")
DIASTOLIC = ("8462-4", "Diastolic blood pressure")
# Reading unit -> (UCUM code, human unit).
UNITS = {"C": ("Cel", "°C"), "F": ("[degF]", "°F"), "/min": ("/min", "beats/minute"), "%": ("%", "%"), "mmHg": ("mm[Hg]", "mmHg")}


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


def worklist_csv(items: Iterable[Any]) -> Iterator[str]:
    """Worklist items (bot.clinic.worklist.Item) with who handled each, how and how fast."""
    header = [
        "item", "patient", "level", "opened_utc", "acknowledged_utc", "acknowledged_by", "seconds_to_acknowledge",
        "closed_utc", "closed_by", "seconds_to_close", "outcome", "note", "escalated_utc", "reasons",
    ]  # fmt: skip

    def seconds(at: float | None, since: float) -> Any:
        return round(at - since) if at else ""

    body = (
        [
            i.id,
            i.patient,
            i.level,
            iso(i.opened_at),
            iso(i.acked_at),
            i.acked_by or "",
            seconds(i.acked_at, i.opened_at),
            iso(i.closed_at),
            i.closed_by or "",
            seconds(i.closed_at, i.opened_at),
            i.outcome or "",
            i.note,
            iso(i.escalated_at),
            " | ".join(i.reasons),
        ]  # fmt: skip
        for i in items
    )
    return _csv([header, *body])


def response_times_csv(table: Iterable[dict[str, Any]]) -> Iterator[str]:
    """The Trends page's response-time table (bot.clinic.worklist.response_times), in seconds."""
    keys = ["level", "days", "items", "open", "ack_p50", "ack_p90", "close_p50", "close_p90"]
    header = ["level", "window_days", "items", "still_open", "ack_p50_s", "ack_p90_s", "close_p50_s", "close_p90_s"]
    return _csv([header, *([("" if r[k] is None else round(r[k]) if isinstance(r[k], float) else r[k]) for k in keys] for r in table)])


def fhir_bundle(conv: Conversation, now: float, identifier_system: str, bundle_type: str = "collection") -> dict[str, Any]:
    """The conversation as a FHIR R4 Bundle: `collection` to read or archive, `transaction` to POST to an EHR.

    `identifier_system` is the clinic's URI for its patient identifiers (the Patient is identified
    under it by the enrolment code, else the pseudonym). Resource ids are uuid5s of the conversation,
    so exporting twice gives the same ids; entries refer to each other by their `urn:uuid:` fullUrls.
    In a transaction, Patient and Device are conditional creates and every other resource a PUT to
    `<type>/<id>`, so a re-export updates what the last one made rather than duplicating it.
    """
    if bundle_type not in ("collection", "transaction"):
        raise ValueError(f"bundle_type must be collection or transaction, not {bundle_type!r}")
    if not identifier_system:
        raise ValueError("identifier_system must be the clinic's identifier URI")
    built = _Bundle(conv, now, identifier_system)
    bundle_id = _uid("crs-bundle", conv.sender_id, built.last_at)
    entries = []
    for resource, if_none_exist in built.resources():
        entry: dict[str, Any] = {"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}
        if bundle_type == "transaction" and if_none_exist:
            entry["request"] = {"method": "POST", "url": resource["resourceType"], "ifNoneExist": if_none_exist}
        elif bundle_type == "transaction":
            entry["request"] = {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"}
        entries.append(_prune(entry))
    return {
        "resourceType": "Bundle",
        "id": bundle_id,
        "identifier": {"system": URI, "value": f"urn:uuid:{bundle_id}"},
        "type": bundle_type,
        "timestamp": iso(now),
        "entry": entries,
    }


class _Bundle:
    """Builds the resources of one conversation's bundle; shared references live here."""

    def __init__(self, conv: Conversation, now: float, system: str) -> None:
        self.conv, self.now, self.system = conv, now, system
        self.kb = load_knowledge_base()
        self.patient_id = _uid("crs-patient", conv.sender_id)
        self.device_id = _uid("crs-device", ASSISTANT_ID)
        # The enrolment code is unique to one patient; the label ("Ward 7 bed 3") is not, and passes
        # to the next patient in that bed: it is only ever the display. An unlinked chat's `patient`
        # is its pseudonym; a linked one without a code (none is loaded so) falls back to the pseudonym too.
        self.patient_identifier = conv.enrolment_code or (pseudonym(conv.sender_id) if conv.linked else conv.patient)
        self.device_identifier = f"urn:uuid:{self.device_id}"
        self.patient = {"reference": f"urn:uuid:{self.patient_id}", "display": conv.patient}
        self.device = {"reference": f"urn:uuid:{self.device_id}", "display": "CRS symptom checker"}
        self.last_at = max((t.at for t in conv.turns if t.at), default=now)
        self.effective = iso(self.last_at)  # when the conversation's findings were last stated

    def resources(self) -> list[tuple[dict[str, Any], str | None]]:
        """Every resource with its conditional-create query (only Patient and Device, which outlive one conversation)."""
        present = [self.symptom(sid, True) for sid in dict.fromkeys(self.conv.symptoms)]
        # one Observation per symptom (its id does not depend on the answer): a symptom in both lists is present
        absent = [self.symptom(sid, False) for sid in dict.fromkeys(self.conv.denied) if sid not in self.conv.symptoms]
        vitals = [
            v for i, turn in enumerate(self.conv.turns) for j, reading in enumerate(turn.vitals) if (v := self.vital(turn, i, j, reading))
        ]
        evidence = present + vitals  # a denied symptom is no evidence of risk
        therapy = self.medication_statement()
        return [
            (self.patient_resource(), _if_none_exist(self.system, self.patient_identifier)),
            (self.device_resource(), _if_none_exist(URI, self.device_identifier)),
            *((r, None) for r in present + absent),
            *((r, None) for r in vitals),
            *(((therapy, None),) if therapy else ()),
            (self.risk_assessment(evidence), None),
            *((self.communication(i, turn), None) for i, turn in enumerate(self.conv.turns)),
        ]

    def patient_resource(self) -> dict[str, Any]:
        return {
            "resourceType": "Patient",
            "id": self.patient_id,
            "identifier": [{"system": self.system, "value": self.patient_identifier}],
            "active": True,
        }

    def device_resource(self) -> dict[str, Any]:
        """The assistant, as the sender of its messages and the performer of the triage."""
        return {
            "resourceType": "Device",
            "id": self.device_id,
            "identifier": [{"system": URI, "value": self.device_identifier}],
            "status": "active",
            "deviceName": [{"name": "CRS symptom checker", "type": "user-friendly-name"}],
            "type": {"text": "Conversational symptom checker (software)"},
        }

    def symptom(self, sid: str, present: bool) -> dict[str, Any]:
        """A reported or denied symptom: its SNOMED CT finding code, valued Present or Absent, with the message that said so.

        The id is the conversation's and the symptom's, not the answer's: a symptom denied after it was
        reported is the same Observation, which a re-export updates to Absent rather than leaving a Present one.
        """
        symptom = self.kb.symptoms.get(sid)
        label = symptom_label(sid)
        coding = [{"system": SNOMED, "code": symptom.snomed[0], "display": symptom.snomed[1]}] if symptom and symptom.snomed else []
        said = next((t for t in reversed(self.conv.turns) if t.who == "patient" and sid in (t.present if present else t.denied)), None)
        return {
            "resourceType": "Observation",
            "id": _uid("crs-obs", self.conv.sender_id, sid),
            "status": "final",
            "category": [SURVEY],
            "code": {"coding": coding, "text": label},
            "subject": self.patient,
            "effectiveDateTime": iso(said.at) if said and said.at else self.effective,
            "performer": [self.patient],
            "valueCodeableConcept": PRESENT if present else ABSENT,
            "note": [{"authorReference": self.patient, "time": iso(said.at), "text": said.text}] if said and said.text else [],
        }

    def vital(self, turn: Turn, turn_index: int, index: int, reading: dict[str, Any]) -> dict[str, Any] | None:
        """One reading the patient typed, as a US Core vital-signs Observation; None when it cannot be coded."""
        name = str(reading.get("kind"))
        kind = VITALS.get(name)
        value, unit = _number(reading.get("value")), kind.unit if kind else ""
        if name == "temperature" and reading.get("unit") in ("C", "F"):
            unit = str(reading["unit"])  # as the patient gave it
        elif name == "temperature":
            value = _number(reading.get("value_c"))  # no usable unit: the Celsius the parser worked out
        if kind is None or value is None:
            return None
        diastolic = _number(reading.get("diastolic"))
        # The blood-pressure profiles require both components: a systolic alone claims only the general vital-signs ones.
        profiles = ("us-core-vital-signs", "vitalsigns") if name == "blood_pressure" and diastolic is None else kind.profiles
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": _uid("crs-vital", self.conv.sender_id, turn_index, index),
            "meta": {"profile": [US_CORE + profiles[0], BASE_PROFILE + profiles[1]]},
            "status": "final",
            "category": [VITAL_SIGNS],
            "code": {"coding": [{"system": LOINC, "code": c, "display": d} for c, d in kind.codings], "text": kind.text},
            "subject": self.patient,
            "effectiveDateTime": iso(turn.at) if turn.at else self.effective,
            "performer": [self.patient],
            "note": [{"authorReference": self.patient, "text": str(reading["text"])}] if reading.get("text") else [],
        }
        if name == "blood_pressure":
            resource["component"] = [
                {
                    "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
                    "valueQuantity": _quantity(v, unit),
                }
                for (code, display), v in ((SYSTOLIC, value), (DIASTOLIC, diastolic))
                if v is not None
            ]
        else:
            resource["valueQuantity"] = _quantity(value, unit)
        return resource

    def medication_statement(self) -> dict[str, Any] | None:
        """The immunotherapy, when known: RxNorm-coded where the knowledge base has the code, its name always."""
        conv = self.conv
        if not (conv.therapy_id or conv.therapy):
            return None
        therapy = self.kb.therapy(conv.therapy_id) or self.kb.therapy(conv.therapy)
        name = therapy.name if therapy else conv.therapy or conv.therapy_id
        coding = [{"system": RXNORM, "code": therapy.rxnorm[0], "display": therapy.rxnorm[1]}] if therapy and therapy.rxnorm else []
        # An infusion date says the dose was given (completed) or is booked (intended); without one the patient is on it.
        day = _day(conv.infusion_date)
        today = datetime.fromtimestamp(self.now, UTC).date()
        status = "active" if day is None else "intended" if day > today else "completed"
        return {
            "resourceType": "MedicationStatement",
            "id": _uid("crs-medication", conv.sender_id, therapy.id if therapy else name),
            "status": status,
            "medicationCodeableConcept": {"coding": coding, "text": name},
            "subject": self.patient,
            "effectiveDateTime": day.isoformat() if day else None,
            "dateAsserted": self.effective,
        }

    def risk_assessment(self, evidence: list[dict[str, Any]]) -> dict[str, Any]:
        """The triage level as a qualitative risk, its reasons as notes and the findings behind it as its basis."""
        level = self.conv.level or "none"
        risk = RISK.get(level)
        reasons = list(dict.fromkeys(r for t in self.conv.turns for r in t.reasons))
        return {
            "resourceType": "RiskAssessment",
            "id": _uid("crs-risk", self.conv.sender_id),
            "status": "final",
            "code": {"text": "Cytokine release syndrome symptom triage"},
            "subject": self.patient,
            "occurrenceDateTime": self.effective,
            "performer": self.device,
            "basis": [{"reference": f"urn:uuid:{r['id']}", "display": r["code"]["text"]} for r in evidence],
            "prediction": [
                {
                    "outcome": {"text": level},
                    "qualitativeRisk": {
                        "coding": [{"system": RISK_PROBABILITY, "code": risk[0], "display": risk[1]}] if risk else [],
                        "text": level,
                    },
                }
            ],
            "note": [{"text": r} for r in reasons],
        }

    def communication(self, index: int, turn: Turn) -> dict[str, Any]:
        """One message of the transcript: the patient writes to the assistant, the assistant answers the patient."""
        sender, recipient = (self.patient, self.device) if turn.who == "patient" else (self.device, self.patient)
        return {
            "resourceType": "Communication",
            "id": _uid("crs-message", self.conv.sender_id, index),
            "status": "completed",
            "subject": self.patient,
            "sent": iso(turn.at),
            "sender": sender,
            "recipient": [recipient],
            "payload": [{"contentString": turn.text}],
        }


def _uid(*parts: object) -> str:
    """A deterministic resource id: the same conversation exported twice gives the same ids."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, ":".join(str(p) for p in parts)))


def _prune(value: Any) -> Any:
    """FHIR forbids empty strings, arrays and objects: drop them (and None) rather than emit an invalid resource."""
    empty: tuple[Any, ...] = (None, "", [], {})
    if isinstance(value, dict):
        return {k: v for k, v in ((k, _prune(v)) for k, v in value.items()) if v not in empty}
    if isinstance(value, list):
        return [v for v in (_prune(v) for v in value) if v not in empty]
    return value


def _if_none_exist(system: str, value: str) -> str:
    """The conditional-create query `identifier=<system>|<value>`, the value escaped for FHIR search and then for the URL."""
    escaped = value.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    return f"identifier={quote(system, safe=':/')}|{quote(escaped, safe='')}"


def _number(value: Any) -> float | int | None:
    """A reading's number (whole numbers as int, so 120 is not written 120.0); None when it is not one."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number.is_integer() else number


def _quantity(value: float | int, unit: str) -> dict[str, Any]:
    code, shown = UNITS[unit]
    return {"value": value, "unit": shown, "system": UCUM, "code": code}


def _day(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None

"""The FHIR export is what an EHR accepts: valid R4 resources, standard codes, resolvable references.

Pure unit tests: conversations are built by hand, the bundle is validated with fhir.resources
(its top-level models are FHIR 4.3 / R4B, the closest release it ships to R4).
"""

from __future__ import annotations

import copy
import importlib
import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.bundle import Bundle

from bot.clinic.exports import fhir_bundle, iso
from bot.clinic.labels import pseudonym
from bot.clinic.transcript import Conversation, Turn
from bot.clinical.knowledge import DEFAULT_KB_PATH, KnowledgeBase, KnowledgeBaseError, parse_knowledge_base, read_knowledge_base

SYSTEM = "https://fhir.crs-clinic.org/sid/patient"
NOW = 1_700_100_000.0
T0 = 1_700_000_000.0
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
US_CORE = "http://hl7.org/fhir/us/core/StructureDefinition/"
URI = "urn:ietf:rfc:3986"
CODE = "CRS-0042"  # the enrolment code of make_conversation's patient
LABEL = "Ward 7 bed 3"  # its clinic label: not unique, reused for the next patient in that bed
PRESENT = {"coding": [{"system": SNOMED, "code": "52101004", "display": "Present"}], "text": "present"}
ABSENT = {"coding": [{"system": SNOMED, "code": "2667000", "display": "Absent"}], "text": "absent"}


# ---------------------------------------------------------------------- Verhoeff (SNOMED CT check digit)
_D = [
    [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    [1, 2, 3, 4, 0, 6, 7, 8, 9, 5],
    [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
    [3, 4, 0, 1, 2, 8, 9, 5, 6, 7],
    [4, 0, 1, 2, 3, 9, 5, 6, 7, 8],
    [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
    [6, 5, 9, 8, 7, 1, 0, 4, 3, 2],
    [7, 6, 5, 9, 8, 2, 1, 0, 4, 3],
    [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
    [9, 8, 7, 6, 5, 4, 3, 2, 1, 0],
]
_P = [list(range(10)), [1, 5, 7, 6, 2, 8, 3, 0, 9, 4]]  # p(i) is the i-th power of p(1)
for _ in range(6):
    _P.append([_P[1][x] for x in _P[-1]])


def verhoeff_ok(number: str) -> bool:
    check = 0
    for i, digit in enumerate(reversed(number)):
        check = _D[check][_P[i % 8][int(digit)]]
    return check == 0


def test_the_verhoeff_check_itself() -> None:
    assert verhoeff_ok("2363") and not verhoeff_ok("2364")  # the textbook example
    assert verhoeff_ok("138875005") and verhoeff_ok("404684003")  # SNOMED CT root, Clinical finding
    assert not verhoeff_ok("404684004") and not verhoeff_ok("404648003")  # a wrong digit, two swapped


def test_the_present_and_absent_qualifier_values_are_snomed_concept_ids() -> None:
    for value in (PRESENT, ABSENT):
        [coding] = value["coding"]
        assert coding["code"][-3:-1] == "00" and verhoeff_ok(coding["code"]), coding


def test_every_symptom_has_a_snomed_concept_id_with_a_valid_check_digit(kb: KnowledgeBase) -> None:
    assert kb.symptoms
    for sid, symptom in kb.symptoms.items():
        assert symptom.snomed is not None, sid
        code, display = symptom.snomed
        assert code.isdigit() and 6 <= len(code) <= 18 and display, sid
        assert code[-3:-1] in ("00", "10"), f"{sid}: {code} is not a concept id (partition {code[-3:-1]})"
        assert verhoeff_ok(code), f"{sid}: {code} fails the Verhoeff check"


def test_therapy_rxnorm_codes_are_numeric_where_present(kb: KnowledgeBase) -> None:
    coded = [t for t in kb.therapies if t.rxnorm]
    assert {"rituximab", "blinatumomab"} <= {t.id for t in coded}
    assert all(t.rxnorm and t.rxnorm[0].isdigit() and t.rxnorm[1] for t in coded)


def test_a_symptom_without_snomed_fails_loading_and_is_named() -> None:
    raw = read_knowledge_base(DEFAULT_KB_PATH)
    parse_knowledge_base(copy.deepcopy(raw))  # the real file loads
    del raw["symptoms"]["cough"]["snomed"]
    with pytest.raises(KnowledgeBaseError, match="symptom cough: missing key 'snomed'"):
        parse_knowledge_base(raw)


def test_a_malformed_code_fails_loading() -> None:
    raw = read_knowledge_base(DEFAULT_KB_PATH)
    raw["symptoms"]["rash"]["snomed"] = {"code": "2718O7003", "display": "Eruption of skin"}
    with pytest.raises(KnowledgeBaseError, match="rash.snomed"):
        parse_knowledge_base(raw)
    raw = read_knowledge_base(DEFAULT_KB_PATH)
    raw["therapies"][0]["rxnorm"] = {"code": "123"}
    with pytest.raises(KnowledgeBaseError, match="rxnorm"):
        parse_knowledge_base(raw)


# ---------------------------------------------------------------------- conversations built by hand
def reading(kind: str, value: float, unit: str, text: str, value_c: float | None = None, diastolic: float | None = None) -> dict[str, Any]:
    return {"kind": kind, "value": value, "unit": unit, "value_c": value_c, "diastolic": diastolic, "text": text}


FIRST = "I had rituximab last week and now temp is 102.5 F, no cough"
SECOND = "can't catch my breath, pulse 130, sats 88%, bp 85/50 and later just 88 on top, no chest pain"
THIRD = "it's 39.6 now"


def make_conversation(
    therapy_id: str = "rituximab",
    therapy: str = "rituximab (Rituxan)",
    level: str = "emergency",
    code: str = CODE,
    sender_id: str = "telegram-42",
) -> Conversation:
    turns = [
        Turn(
            T0,
            "patient",
            FIRST,
            present=["high_fever"],
            denied=["cough"],
            vitals=[reading("temperature", 102.5, "F", "temp is 102.5 F", 39.2)],
        ),
        Turn(T0 + 5, "bot", "Thanks. Any trouble breathing?"),
        Turn(
            T0 + 60,
            "patient",
            SECOND,
            present=["difficulty_breathing"],
            denied=["chest_pain"],
            reasons=["spo2 88% < 92% -> difficulty_breathing -> emergency"],
            level="emergency",
            vitals=[
                reading("pulse", 130.0, "/min", "pulse 130"),
                reading("spo2", 88.0, "%", "sats 88%"),
                reading("blood_pressure", 85.0, "mmHg", "bp 85/50", diastolic=50.0),
                reading("blood_pressure", 88.0, "mmHg", "88 on top"),
            ],
        ),
        Turn(T0 + 65, "bot", "Please call emergency services now."),
        Turn(T0 + 120, "patient", THIRD, present=["fever"], vitals=[reading("temperature", 39.6, "C", "39.6", 39.6)]),
    ]
    return Conversation(
        sender_id=sender_id,
        patient=LABEL,
        linked=True,
        therapy=therapy,
        infusion_date="2023-11-07" if therapy_id else None,
        level=level,
        turns=turns,
        symptoms=["high_fever", "difficulty_breathing", "fever"],
        denied=["cough", "chest_pain"],
        therapy_id=therapy_id,
        enrolment_code=code,
    )


def resources(bundle: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if kind is None or e["resource"]["resourceType"] == kind]


def observations(bundle: dict[str, Any], category: str) -> list[dict[str, Any]]:
    return [r for r in resources(bundle, "Observation") if r["category"][0]["coding"][0]["code"] == category]


def walk(value: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair anywhere in a JSON document."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from walk(v)


@pytest.fixture(params=["collection", "transaction"])
def bundle(request: pytest.FixtureRequest) -> dict[str, Any]:
    return fhir_bundle(make_conversation(), NOW, identifier_system=SYSTEM, bundle_type=request.param)


# ---------------------------------------------------------------------- validity
def test_the_bundle_and_every_resource_parse_with_their_fhir_models(bundle: dict[str, Any]) -> None:
    Bundle.parse_obj(bundle)
    kinds = Counter(r["resourceType"] for r in resources(bundle))
    assert kinds == {"Patient": 1, "Device": 1, "Observation": 5 + 6, "MedicationStatement": 1, "RiskAssessment": 1, "Communication": 5}
    for resource in resources(bundle):
        model = getattr(importlib.import_module(f"fhir.resources.{resource['resourceType'].lower()}"), resource["resourceType"])
        model.parse_obj(resource)


def test_the_bundle_round_trips(bundle: dict[str, Any]) -> None:
    parsed = Bundle.parse_obj(bundle)
    for again in (Bundle.parse_obj(parsed.dict()), Bundle.parse_raw(parsed.json())):
        first, second = json.loads(parsed.json()), json.loads(again.json())
        assert Counter(r["resourceType"] for r in resources(second)) == Counter(r["resourceType"] for r in resources(first))
        codes = lambda doc: sorted((s, c) for k, v in walk(doc) if k == "coding" for s, c in ((x["system"], x["code"]) for x in v))  # noqa: E731
        assert codes(second) == codes(first) == codes(bundle)
        assert second == first


def test_exports_are_deterministic() -> None:
    conv = make_conversation()
    assert fhir_bundle(conv, NOW, SYSTEM) == fhir_bundle(conv, NOW, SYSTEM)
    ids = [r["id"] for r in resources(fhir_bundle(conv, NOW, SYSTEM))]
    assert len(ids) == len(set(ids))


def test_no_example_domain_and_the_clinic_identifier_system(bundle: dict[str, Any]) -> None:
    systems = [v for k, v in walk(bundle) if k == "system"]
    assert systems and not [s for s in systems if "example" in s]
    [patient] = resources(bundle, "Patient")
    assert patient["identifier"] == [{"system": SYSTEM, "value": CODE}]
    assert bundle["identifier"] == {"system": URI, "value": f"urn:uuid:{bundle['id']}"}
    assert "example" not in json.dumps(bundle)


# ---------------------------------------------------------------------- patient and device identity
def patient_entry(bundle: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")


def test_an_enrolled_patient_is_identified_by_the_code_never_the_label(bundle: dict[str, Any]) -> None:
    entry = patient_entry(bundle)
    assert entry["resource"]["identifier"] == [{"system": SYSTEM, "value": CODE}]
    assert "name" not in entry["resource"]  # a bed label is not a name
    identifiers = [i["value"] for k, v in walk(bundle) if k == "identifier" for i in (v if isinstance(v, list) else [v])]
    queries = [v for k, v in walk(bundle) if k == "ifNoneExist"]
    assert LABEL not in identifiers and not [q for q in queries if "Ward" in q]
    displays = {v["display"] for k, v in walk(bundle) if isinstance(v, dict) and v.get("reference") == entry["fullUrl"]}
    assert displays == {LABEL}  # the label is kept, only to show


def test_two_patients_in_the_same_bed_are_two_identifiers() -> None:
    first = fhir_bundle(make_conversation(code="CRS-0042"), NOW, SYSTEM, bundle_type="transaction")
    second = fhir_bundle(make_conversation(code="CRS-0107", sender_id="telegram-77"), NOW, SYSTEM, bundle_type="transaction")
    (a, b) = (patient_entry(first), patient_entry(second))
    assert a["resource"]["identifier"] != b["resource"]["identifier"]
    assert a["request"]["ifNoneExist"] == f"identifier={SYSTEM}|CRS-0042"
    assert b["request"]["ifNoneExist"] == f"identifier={SYSTEM}|CRS-0107"


def test_an_unlinked_chat_is_identified_by_its_pseudonym() -> None:
    conv = make_conversation(code="")
    conv.patient, conv.linked = "P-1a2b3c4d", False
    entry = patient_entry(fhir_bundle(conv, NOW, SYSTEM, bundle_type="transaction"))
    assert entry["resource"]["identifier"] == [{"system": SYSTEM, "value": "P-1a2b3c4d"}]
    assert entry["request"]["ifNoneExist"] == f"identifier={SYSTEM}|P-1a2b3c4d"


def test_a_linked_chat_without_a_code_falls_back_to_the_pseudonym_not_the_label() -> None:
    conv = make_conversation(code="")
    entry = patient_entry(fhir_bundle(conv, NOW, SYSTEM, bundle_type="transaction"))
    assert entry["resource"]["identifier"] == [{"system": SYSTEM, "value": pseudonym(conv.sender_id)}]
    assert entry["request"]["ifNoneExist"] == f"identifier={SYSTEM}|{pseudonym(conv.sender_id)}"


def test_the_device_is_identified_by_its_own_uri(bundle: dict[str, Any]) -> None:
    entry = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Device")
    device = entry["resource"]
    assert device["identifier"] == [{"system": URI, "value": f"urn:uuid:{device['id']}"}]
    assert str(uuid.UUID(device["id"])) == device["id"]
    if bundle["type"] == "transaction":
        assert entry["request"] == {"method": "POST", "url": "Device", "ifNoneExist": f"identifier={URI}|urn%3Auuid%3A{device['id']}"}
    other = fhir_bundle(make_conversation(code="CRS-0107", sender_id="telegram-77"), NOW, SYSTEM)
    assert resources(other, "Device") == [device]  # one assistant, whatever the conversation


def test_identifier_system_is_required() -> None:
    with pytest.raises(ValueError):
        fhir_bundle(make_conversation(), NOW, identifier_system="")
    with pytest.raises(ValueError):
        fhir_bundle(make_conversation(), NOW, identifier_system=SYSTEM, bundle_type="batch")


# ---------------------------------------------------------------------- symptoms
def test_symptom_codes_are_the_knowledge_base_snomed_codes(bundle: dict[str, Any], kb: KnowledgeBase) -> None:
    conv = make_conversation()
    survey = observations(bundle, "survey")
    assert len(survey) == len(conv.symptoms) + len(conv.denied)
    by_label = {o["code"]["text"]: o for o in survey}
    for present, ids in ((True, conv.symptoms), (False, conv.denied)):
        for sid in ids:
            obs = by_label[kb.symptoms[sid].label]
            code, display = kb.symptoms[sid].snomed  # type: ignore[misc]
            assert obs["code"]["coding"] == [{"system": SNOMED, "code": code, "display": display}]
            assert obs["valueCodeableConcept"] == (PRESENT if present else ABSENT) and obs["status"] == "final"
            assert "valueBoolean" not in obs


def test_symptoms_keep_the_patients_words_and_time(bundle: dict[str, Any], kb: KnowledgeBase) -> None:
    by_label = {o["code"]["text"]: o for o in observations(bundle, "survey")}
    said = {"high_fever": (FIRST, T0), "cough": (FIRST, T0), "difficulty_breathing": (SECOND, T0 + 60), "chest_pain": (SECOND, T0 + 60)}
    for sid, (text, at) in said.items():
        obs = by_label[kb.symptoms[sid].label]
        assert [n["text"] for n in obs["note"]] == [text]
        assert obs["effectiveDateTime"] == iso(at)
        assert obs["category"][0]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/observation-category"


# ---------------------------------------------------------------------- vital signs
def vital(bundle: dict[str, Any], loinc: str) -> list[dict[str, Any]]:
    return [o for o in observations(bundle, "vital-signs") if o["code"]["coding"][0]["code"] == loinc]


def test_temperatures_keep_the_patients_unit(bundle: dict[str, Any]) -> None:
    fahrenheit, celsius = vital(bundle, "8310-5")
    assert fahrenheit["valueQuantity"] == {"value": 102.5, "unit": "°F", "system": UCUM, "code": "[degF]"}
    assert celsius["valueQuantity"] == {"value": 39.6, "unit": "°C", "system": UCUM, "code": "Cel"}
    assert fahrenheit["effectiveDateTime"] == iso(T0) and celsius["effectiveDateTime"] == iso(T0 + 120)
    assert fahrenheit["meta"]["profile"][0] == US_CORE + "us-core-body-temperature"
    assert [n["text"] for n in fahrenheit["note"]] == ["temp is 102.5 F"]


def test_heart_rate_and_pulse_oximetry(bundle: dict[str, Any]) -> None:
    [pulse] = vital(bundle, "8867-4")
    assert pulse["valueQuantity"] == {"value": 130, "unit": "beats/minute", "system": UCUM, "code": "/min"}
    assert pulse["meta"]["profile"][0] == US_CORE + "us-core-heart-rate"
    [spo2] = vital(bundle, "59408-5")
    assert [(c["system"], c["code"]) for c in spo2["code"]["coding"]] == [(LOINC, "59408-5"), (LOINC, "2708-6")]
    assert spo2["valueQuantity"] == {"value": 88, "unit": "%", "system": UCUM, "code": "%"}
    assert spo2["meta"]["profile"][0] == US_CORE + "us-core-pulse-oximetry"


def test_blood_pressure_panels_with_and_without_diastolic(bundle: dict[str, Any]) -> None:
    both, systolic_only = vital(bundle, "85354-9")
    components = lambda o: {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in o["component"]}  # noqa: E731
    mmhg = lambda v: {"value": v, "unit": "mmHg", "system": UCUM, "code": "mm[Hg]"}  # noqa: E731
    assert components(both) == {"8480-6": mmhg(85), "8462-4": mmhg(50)}
    assert components(systolic_only) == {"8480-6": mmhg(88)}
    assert "valueQuantity" not in both and "valueQuantity" not in systolic_only
    assert both["meta"]["profile"][0] == US_CORE + "us-core-blood-pressure"
    # the blood-pressure profiles require a diastolic: a systolic alone does not claim them
    assert systolic_only["meta"]["profile"][0] == US_CORE + "us-core-vital-signs"


def test_every_vital_has_the_us_core_required_elements(bundle: dict[str, Any]) -> None:
    patient = next(e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient")
    vitals = observations(bundle, "vital-signs")
    assert len(vitals) == 6
    for o in vitals:
        assert o["status"] == "final" and o["subject"]["reference"] == patient and o["effectiveDateTime"]
        assert o["category"][0]["coding"][0]["system"] == "http://terminology.hl7.org/CodeSystem/observation-category"
        assert o["code"]["coding"][0]["system"] == LOINC and o["meta"]["profile"][0].startswith(US_CORE)
        for quantity in [o.get("valueQuantity")] + [c["valueQuantity"] for c in o.get("component", [])]:
            if quantity is not None:
                assert quantity["system"] == UCUM and isinstance(quantity["value"], int | float)


def test_a_reading_that_cannot_be_coded_is_left_out() -> None:
    conv = make_conversation()
    conv.turns[0].vitals = [reading("glucose", 7.0, "mmol/L", "sugar 7"), reading("pulse", "fast", "/min", "fast")]  # type: ignore[arg-type]
    assert len(observations(fhir_bundle(conv, NOW, SYSTEM), "vital-signs")) == 5  # the 5 readings of the later turns


# ---------------------------------------------------------------------- therapy
def test_therapy_with_an_rxnorm_code(bundle: dict[str, Any], kb: KnowledgeBase) -> None:
    [statement] = resources(bundle, "MedicationStatement")
    therapy = kb.therapy("rituximab")
    assert therapy and therapy.rxnorm
    concept = statement["medicationCodeableConcept"]
    assert concept["coding"] == [{"system": RXNORM, "code": therapy.rxnorm[0], "display": therapy.rxnorm[1]}]
    assert concept["text"] == therapy.name
    assert statement["effectiveDateTime"] == "2023-11-07" and statement["status"] == "completed"


def test_therapy_without_an_rxnorm_code_is_text_only(kb: KnowledgeBase) -> None:
    therapy = kb.therapy("tisagenlecleucel")
    assert therapy and therapy.rxnorm is None
    bundle = fhir_bundle(make_conversation("tisagenlecleucel", "tisagenlecleucel (Kymriah)"), NOW, SYSTEM)
    Bundle.parse_obj(bundle)
    [statement] = resources(bundle, "MedicationStatement")
    assert statement["medicationCodeableConcept"] == {"text": "tisagenlecleucel (Kymriah)"}


def test_a_future_infusion_is_intended_and_no_date_is_active() -> None:
    conv = make_conversation()
    conv.infusion_date = "2030-01-01"
    assert resources(fhir_bundle(conv, NOW, SYSTEM), "MedicationStatement")[0]["status"] == "intended"
    conv.infusion_date = None
    [statement] = resources(fhir_bundle(conv, NOW, SYSTEM), "MedicationStatement")
    assert statement["status"] == "active" and "effectiveDateTime" not in statement


def test_no_therapy_no_medication_statement() -> None:
    bundle = fhir_bundle(make_conversation("", ""), NOW, SYSTEM)
    Bundle.parse_obj(bundle)
    assert resources(bundle, "MedicationStatement") == []


# ---------------------------------------------------------------------- triage
@pytest.mark.parametrize(("level", "risk"), [("emergency", "high"), ("urgent", "moderate"), ("monitor", "low"), ("none", "negligible")])
def test_triage_is_a_risk_assessment(level: str, risk: str) -> None:
    bundle = fhir_bundle(make_conversation(level=level), NOW, SYSTEM)
    Bundle.parse_obj(bundle)
    [assessment] = resources(bundle, "RiskAssessment")
    assert assessment["status"] == "final" and assessment["occurrenceDateTime"] == iso(T0 + 120)
    [prediction] = assessment["prediction"]
    assert prediction["outcome"]["text"] == level
    assert prediction["qualitativeRisk"]["coding"] == [
        {"system": "http://terminology.hl7.org/CodeSystem/risk-probability", "code": risk, "display": f"{risk.capitalize()} likelihood"}
    ]
    assert [n["text"] for n in assessment["note"]] == ["spo2 88% < 92% -> difficulty_breathing -> emergency"]
    basis = {b["display"] for b in assessment["basis"]}
    assert {"very high fever", "difficulty breathing", "fever", "Body temperature", "Blood pressure"} <= basis
    assert "cough" not in basis  # a denied symptom is no evidence of risk


def test_the_risk_basis_is_the_present_symptoms_and_the_vitals() -> None:
    bundle = fhir_bundle(make_conversation(), NOW, SYSTEM)
    [assessment] = resources(bundle, "RiskAssessment")
    survey = observations(bundle, "survey")
    present = [f"urn:uuid:{o['id']}" for o in survey if o["valueCodeableConcept"] == PRESENT]
    vitals = [f"urn:uuid:{o['id']}" for o in observations(bundle, "vital-signs")]
    assert len(present) == 3 and len(survey) == 5
    assert [b["reference"] for b in assessment["basis"]] == present + vitals


# ---------------------------------------------------------------------- transcript
def test_the_transcript_is_one_communication_per_turn(bundle: dict[str, Any]) -> None:
    conv = make_conversation()
    url = {e["resource"]["resourceType"]: e["fullUrl"] for e in bundle["entry"] if e["resource"]["resourceType"] in ("Patient", "Device")}
    messages = resources(bundle, "Communication")
    assert [m["payload"][0]["contentString"] for m in messages] == [t.text for t in conv.turns]
    assert [m["sent"] for m in messages] == [iso(t.at) for t in conv.turns]
    for m, turn in zip(messages, conv.turns, strict=True):
        sender, recipient = ("Patient", "Device") if turn.who == "patient" else ("Device", "Patient")
        assert m["status"] == "completed" and m["subject"]["reference"] == url["Patient"]
        assert m["sender"]["reference"] == url[sender] and [r["reference"] for r in m["recipient"]] == [url[recipient]]
    assert len(resources(bundle, "Device")) == 1


# ---------------------------------------------------------------------- references and the transaction form
def test_every_reference_resolves_to_an_entry(bundle: dict[str, Any]) -> None:
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(full_urls) == len(set(full_urls)) and all(
        u == f"urn:uuid:{e['resource']['id']}" for u, e in zip(full_urls, bundle["entry"], strict=True)
    )
    references = [v["reference"] for k, v in walk(bundle) if isinstance(v, dict) and "reference" in v]
    assert len(references) > 20
    assert set(references) <= set(full_urls)


def test_the_transaction_form() -> None:
    conv = make_conversation()
    bundle = fhir_bundle(conv, NOW, SYSTEM, bundle_type="transaction")
    assert bundle["type"] == "transaction"
    methods = Counter(e["request"]["method"] for e in bundle["entry"])
    assert methods == {"POST": 2, "PUT": len(bundle["entry"]) - 2}
    for entry in bundle["entry"]:
        kind, request = entry["resource"]["resourceType"], entry["request"]
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        if kind in ("Patient", "Device"):  # conditional creates: they outlive one conversation
            assert request["method"] == "POST" and request["url"] == kind and request["ifNoneExist"].startswith("identifier=")
        else:  # idempotent updates of the resource's own deterministic id
            assert request == {"method": "PUT", "url": f"{kind}/{entry['resource']['id']}"}
    # a code with characters FHIR search or the URL reserve is escaped, otherwise identifier=<system>|<value>
    conv.enrolment_code = "WARD 7|3"
    patient = patient_entry(fhir_bundle(conv, NOW, SYSTEM, bundle_type="transaction"))
    assert patient["request"]["ifNoneExist"] == f"identifier={SYSTEM}|WARD%207%5C%7C3"
    assert all("request" not in e for e in fhir_bundle(conv, NOW, SYSTEM)["entry"])


def test_exporting_twice_makes_the_same_requests() -> None:
    requests = [[e["request"] for e in fhir_bundle(make_conversation(), NOW, SYSTEM, bundle_type="transaction")["entry"]] for _ in range(2)]
    assert requests[0] == requests[1]
    assert len({r["url"] for r in requests[0] if r["method"] == "PUT"}) == len(requests[0]) - 2


def test_a_re_export_after_the_conversation_went_on_updates_the_same_resources() -> None:
    conv = make_conversation()
    before = fhir_bundle(conv, NOW, SYSTEM, bundle_type="transaction")
    conv.turns.append(Turn(T0 + 300, "patient", "actually I am coughing now", present=["cough"]))
    conv.symptoms, conv.denied = [*conv.symptoms, "cough"], ["chest_pain"]
    after = fhir_bundle(conv, NOW, SYSTEM, bundle_type="transaction")
    puts = lambda b: {e["request"]["url"]: e["resource"] for e in b["entry"] if e["request"]["method"] == "PUT"}  # noqa: E731
    assert set(puts(before)) < set(puts(after))  # nothing filed under a new id: only the new message is new
    assert set(puts(after)) - set(puts(before)) == {f"Communication/{resources(after, 'Communication')[-1]['id']}"}
    [cough] = [url for url, r in puts(before).items() if r["resourceType"] == "Observation" and r["code"]["text"] == "cough"]
    assert puts(before)[cough]["valueCodeableConcept"] == ABSENT and puts(after)[cough]["valueCodeableConcept"] == PRESENT


def test_a_conversation_without_turns_still_makes_a_valid_bundle() -> None:
    conv = Conversation("s", "P-00000000", False, "", None, "none", [], [], [])
    for kind in ("collection", "transaction"):
        bundle = fhir_bundle(conv, NOW, SYSTEM, bundle_type=kind)
        Bundle.parse_obj(bundle)
        assert Counter(r["resourceType"] for r in resources(bundle)) == {"Patient": 1, "Device": 1, "RiskAssessment": 1}


def test_empty_texts_are_left_out_rather_than_made_invalid() -> None:
    conv = make_conversation()
    conv.turns[0].text = ""  # e.g. a sticker or a photo
    conv.turns[1].text = ""
    conv.turns[0].vitals[0]["text"] = ""
    bundle = fhir_bundle(conv, NOW, SYSTEM)
    Bundle.parse_obj(bundle)  # FHIR forbids empty strings
    assert "payload" not in resources(bundle, "Communication")[1]
    assert "note" not in vital(bundle, "8310-5")[0]

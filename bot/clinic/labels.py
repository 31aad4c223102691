"""How the clinic shows what conversations hold: pseudonyms, symptom and therapy names, readings,
levels in order of severity; and the one decoder of a stored event's JSON."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from bot.clinical.knowledge import LEVEL_RANK, load_knowledge_base

LEVELS_BY_SEVERITY = sorted(LEVEL_RANK, key=lambda level: LEVEL_RANK[level], reverse=True)  # emergency first


# Set to "test" in a user message's metadata by an authenticated caller (bot/rasa_plugins/channels.py): the
# conversation is evaluation or benchmark traffic, hidden from the clinic and never alerted.
TRAFFIC_KEY = "traffic"


def pseudonym(sender_id: str) -> str:
    """How an unlinked conversation is shown: stable, short, not the channel's id."""
    return "P-" + hashlib.sha256(sender_id.encode()).hexdigest()[:8]


def symptom_label(symptom_id: str) -> str:
    kb = load_knowledge_base()
    symptom = kb.symptoms.get(symptom_id)
    return symptom.label if symptom is not None else symptom_id


def therapy_name(therapy_id: str | None) -> str:
    """Enrolments store the knowledge-base therapy id; people read its name."""
    therapy = load_knowledge_base().therapy(therapy_id) if therapy_id else None
    return therapy.name if therapy else (therapy_id or "")


def vital_text(v: dict[str, Any]) -> str:
    """A reading as a nurse writes it: "39.2 °C", "102.5 °F (39.2 °C)", "BP 85/50 mmHg"."""
    kind, value = v.get("kind"), v.get("value")
    if kind == "temperature":
        shown = f"{value:g} °{v.get('unit') or 'C'}"
        if v.get("unit") == "F" and v.get("value_c") is not None:
            shown += f" ({v['value_c']:.1f} °C)"
        return shown
    if kind == "pulse":
        return f"pulse {value:g}/min"
    if kind == "blood_pressure":
        return f"BP {value:g}/{v['diastolic']:g} mmHg" if v.get("diastolic") else f"BP {value:g} systolic"
    if kind == "spo2":
        return f"SpO2 {value:g} %"
    return str(v.get("text") or "")


def event_data(data: str | None) -> dict[str, Any]:
    try:
        value = json.loads(data or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}

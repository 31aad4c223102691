"""The texts the relay sends by itself, read from the files that own them.

Safety texts (fail-safe, emergency signs, welcome) are Rasa responses in domain.yml, so the
relay says exactly what the Rasa server would; relay-only texts live in data/telegram.yml.
Both are read once at start-up: the relay must be able to answer while Rasa is down.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from bot import PROJECT_ROOT

DOMAIN_RESPONSES = ("utter_greet", "utter_failsafe", "utter_failsafe_emergency", "utter_faq_emergency_signs")


@dataclass(frozen=True)
class RelayTexts:
    greet: str
    failsafe: str
    failsafe_emergency: str
    emergency_signs: str
    relay: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.relay[key]


def _first_text(responses: dict, name: str) -> str:
    variants = responses.get(name) or []
    texts = [v["text"] for v in variants if isinstance(v, dict) and v.get("text")]
    if not texts:
        raise ValueError(f"domain.yml has no text for {name}")
    return texts[0]


def load_texts(domain: Path = PROJECT_ROOT / "domain.yml", relay: Path = PROJECT_ROOT / "data" / "telegram.yml") -> RelayTexts:
    responses = yaml.safe_load(domain.read_text(encoding="utf-8"))["responses"]
    greet, failsafe, emergency, signs = (_first_text(responses, name) for name in DOMAIN_RESPONSES)
    own = yaml.safe_load(relay.read_text(encoding="utf-8"))["telegram"]
    return RelayTexts(greet, failsafe, emergency, signs, {k: str(v).strip() for k, v in own.items()})

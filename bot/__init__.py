"""CRS symptom checker, the shipped product: the clinical knowledge base, the NLU components, the
Telegram relay, the check-ins, the clinic review app, what plugs into Rasa and what patches it,
and the operations CLI (`python -m bot`). Developer tooling is in tools/."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

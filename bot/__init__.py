"""CRS symptom checker: the NLU components, the Telegram relay, the check-ins, the clinic review app
and the operations CLI (`python -m bot`)."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

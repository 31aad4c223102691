"""CRS symptom checker: NLU components, operations CLI and (later) the Telegram relay."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent

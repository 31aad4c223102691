"""Rasa custom actions (served by `rasa run actions`) and the triage rules they call."""

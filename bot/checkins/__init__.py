"""Proactive check-ins for enrolled patients: schedules as data (data/checkins.yml), sent by the relay."""

"""Symptom extraction: a spaCy pipeline built from the knowledge base, wrapped for Rasa."""

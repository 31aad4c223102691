"""The clinical knowledge base (data/symptoms.yml and the files it names): symptoms, their class
and phrasings, vital thresholds, therapies and levels. The NLU, the triage rules, the check-ins
and the clinic all read it from here."""

"""The clinical knowledge base (data/clinical.yml, with the lay phrasings of data/phrasings.yml): symptoms, their class
and phrasings, vital thresholds, therapies and levels. The NLU, the triage rules, the check-ins
and the clinic all read it from here."""

"""Shared fixtures: one extractor per session (building it compiles every pattern)."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from bot.clinical.knowledge import KnowledgeBase, load_knowledge_base
from bot.nlu.extractor import SymptomExtractor

# `make test` runs the property tests derandomized: a fresh clone gets the same verdict every
# time. `make properties` explores at random (HYPOTHESIS_PROFILE=explore) with more examples;
# every counterexample it finds becomes an @example in the test (tests/nlu/test_properties.py).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("explore", derandomize=False, print_blob=True)  # examples: runs() in test_properties
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def kb() -> KnowledgeBase:
    return load_knowledge_base()


@pytest.fixture(scope="session")
def extractor(kb: KnowledgeBase) -> SymptomExtractor:
    return SymptomExtractor(kb)

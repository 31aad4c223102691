"""Shared fixtures: one extractor per session (building it compiles every pattern)."""

from __future__ import annotations

import pytest

from bot.nlu.extractor import SymptomExtractor
from bot.nlu.knowledge import KnowledgeBase, load_knowledge_base


@pytest.fixture(scope="session")
def kb() -> KnowledgeBase:
    return load_knowledge_base()


@pytest.fixture(scope="session")
def extractor(kb: KnowledgeBase) -> SymptomExtractor:
    return SymptomExtractor(kb)

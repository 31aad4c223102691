"""The clinic's tests share one database: a real SQLite file per test with the clinic's tables."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from bot.clinic.schema import create_tables
from bot.db import create_db_engine


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    e = create_db_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    create_tables(e)
    return e

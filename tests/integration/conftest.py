"""The real stack for integration tests: action server + Rasa server on spare ports, own SQLite file."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from bot.evaluate import RestClient
from bot.servers import Stack
from bot.settings import Settings, load_settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = load_settings()
    db = tmp_path_factory.mktemp("db") / "tracker.db"
    settings = Settings(
        database_url=f"sqlite:///{db}",
        rasa_port=free_port(),
        actions_port=free_port(),
        clinic_port=base.clinic_port,
        rasa_api_token=base.rasa_api_token,
        telegram_bot_token=None,
    )
    s = Stack(settings, log_dir=Path(tmp_path_factory.mktemp("log")))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def client(stack: Stack) -> RestClient:
    return RestClient(stack.settings.rasa_url, str(stack.settings.rasa_api_token))

"""The real stack for integration tests: action server + Rasa server on spare ports, own SQLite file."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.datastructures import Secret

from bot.servers import Stack, isolated_settings
from bot.settings import Settings
from bot.telegram.identity import sender_id
from tools.evaluate import RestClient
from tools.fake_bot_api import FakeTelegram
from tools.pgcluster import PgCluster, pg_bin, throwaway_cluster


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    settings = isolated_settings(tmp_path_factory.mktemp("db"))
    s = Stack(settings, log_dir=Path(tmp_path_factory.mktemp("log")))
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throw-away PostgreSQL cluster for the session; skipped where Debian's package is absent."""
    if pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); .ci/run installs it")
    with throwaway_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def client(stack: Stack) -> RestClient:
    return RestClient(stack.settings.rasa_url, str(stack.settings.rasa_api_token))


# ---------------------------------------------------------------------- Telegram relay
BOT_TOKEN = "4242:relay-test-token-SECRET"


@dataclass
class RelayRig:
    """The relay process (`python -m bot relay`) against the fake Bot API and the real stack."""

    fake: FakeTelegram
    stack: Stack  # the stack running the relay; `rasa`/`actions` live in the shared stack
    settings: Settings

    def sender(self, chat_id: int) -> str:
        return sender_id(chat_id, str(self.settings.sender_id_key))

    def tracker(self, chat_id: int) -> dict:
        return RestClient(self.settings.rasa_url, str(self.settings.rasa_api_token)).tracker(self.sender(chat_id))


def wait_until(check: Callable[[], bool], timeout: float = 30, what: str = "condition") -> None:
    """Poll `check` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not met after {timeout} s"
        time.sleep(0.1)


def relay_settings(stack: Stack, fake: FakeTelegram, tmp: Path, **overrides: object) -> Settings:
    defaults: dict[str, object] = {
        "telegram_bot_token": Secret(BOT_TOKEN),
        "telegram_api_base_url": fake.base_url,
        "relay_outbox_path": tmp / "outbox.db",
        "relay_rasa_timeout": 3.0,
        "sender_id_key": Secret("test-sender-key"),
    }
    return dataclasses.replace(stack.settings, **{**defaults, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def relay(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayRig]:
    fake = FakeTelegram(token=BOT_TOKEN).start()
    tmp = tmp_path_factory.mktemp("relay")
    settings = relay_settings(stack, fake, tmp)
    relay_stack = Stack(settings, log_dir=tmp)
    relay_stack.start_relay()
    yield RelayRig(fake, relay_stack, settings)
    relay_stack.stop()
    fake.stop()

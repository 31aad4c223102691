"""Operations settings from the environment (SPEC "Operations contract"); a `.env` file may set them.

Starlette's `Config` (already a dependency of the clinic app to come) reads environment first,
then `.env`, with typed casts; `Secret` keeps the API token out of reprs and logs.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from starlette.config import Config
from starlette.datastructures import Secret

from bot import PROJECT_ROOT

VAR_DIR = PROJECT_ROOT / "var"
MODEL_PATH = PROJECT_ROOT / "models" / "crs.tar.gz"
DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'crs.db'}"


@dataclass(frozen=True)
class Settings:
    database_url: str
    rasa_port: int
    actions_port: int
    clinic_port: int
    rasa_api_token: Secret
    telegram_bot_token: Secret | None

    @property
    def rasa_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def actions_url(self) -> str:
        return f"http://127.0.0.1:{self.actions_port}"


def _api_token(configured: str | None) -> str:
    """The HTTP API token: configured, else one generated once and kept in var/ (mode 600)."""
    if configured:
        return configured
    path = VAR_DIR / "rasa-api-token"
    try:
        return path.read_text().strip()
    except OSError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(token)
        return token


def load_settings(env_file: Path | None = None) -> Settings:
    env_file = env_file or PROJECT_ROOT / ".env"
    config = Config(env_file if env_file.exists() else None)
    telegram = config("TELEGRAM_BOT_TOKEN", default=None)
    return Settings(
        database_url=config("DATABASE_URL", default=DEFAULT_DATABASE_URL),
        rasa_port=config("RASA_PORT", cast=int, default=5005),
        actions_port=config("ACTIONS_PORT", cast=int, default=5055),
        clinic_port=config("CLINIC_PORT", cast=int, default=8000),
        rasa_api_token=Secret(_api_token(config("RASA_API_TOKEN", default=None))),
        telegram_bot_token=Secret(telegram) if telegram else None,
    )

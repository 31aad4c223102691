"""Operations settings from the environment (SPEC "Operations contract"); a `.env` file may set them.

Starlette's `Config` (already a dependency of the clinic app to come) reads environment first,
then `.env`, with typed casts; `Secret` keeps the API token out of reprs and logs.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from starlette.config import Config
from starlette.datastructures import Secret

from bot import PROJECT_ROOT

VAR_DIR = PROJECT_ROOT / "var"
MODEL_PATH = PROJECT_ROOT / "models" / "crs.tar.gz"
DEFAULT_DATABASE_URL = f"sqlite:///{VAR_DIR / 'crs.db'}"


# Each environment variable and the setting it fills (as_env, and child_env in bot/servers.py).
ENV_VARIABLES: dict[str, str] = {
    "DATABASE_URL": "database_url",
    "RASA_PORT": "rasa_port",
    "ACTIONS_PORT": "actions_port",
    "CLINIC_PORT": "clinic_port",
    "RASA_API_TOKEN": "rasa_api_token",
    "TELEGRAM_BOT_TOKEN": "telegram_bot_token",
    "TELEGRAM_API_BASE_URL": "telegram_api_base_url",
    "TELEGRAM_WEBHOOK_URL": "telegram_webhook_url",
    "TELEGRAM_WEBHOOK_SECRET": "telegram_webhook_secret",
    "TELEGRAM_WEBHOOK_LISTEN": "telegram_webhook_listen",
    "TELEGRAM_WEBHOOK_PORT": "telegram_webhook_port",
    "RELAY_RASA_TIMEOUT": "relay_rasa_timeout",
    "TELEGRAM_SEND_RATE": "telegram_send_rate",
    "RELAY_OUTBOX_PATH": "relay_outbox_path",
    "SENDER_ID_KEY": "sender_id_key",
    "CLINIC_SECRET_KEY": "clinic_secret_key",
    "CLINIC_HTTPS_ONLY": "clinic_https_only",
    "CLINIC_ALERT_WEBHOOK_URL": "clinic_alert_webhook_url",
    "CLINIC_ALERT_CHAT_ID": "clinic_alert_chat_id",
    "CLINIC_ALERT_LEVELS": "clinic_alert_levels",
    "CLINIC_PUBLIC_URL": "clinic_public_url",
    "CLINIC_ESCALATION_WEBHOOK_URL": "clinic_escalation_webhook_url",
    "CLINIC_ESCALATION_CHAT_ID": "clinic_escalation_chat_id",
    "CLINIC_ESCALATE_AFTER": "clinic_escalate_after",
    "FHIR_IDENTIFIER_SYSTEM": "fhir_identifier_system",
    "CLINIC_TIMEZONE": "clinic_timezone",
    "STATUS_PORT": "status_port",
    "CLINIC_WORKER_PORT": "clinic_worker_port",
    "LOG_DIR": "log_dir",
    "RETENTION_DAYS": "retention_days",
    "REDIS_URL": "redis_url",
    "RELAY_RASA_URL": "relay_rasa_url",
}


@dataclass(frozen=True)
class Settings:
    database_url: str
    rasa_port: int
    actions_port: int
    clinic_port: int
    rasa_api_token: Secret
    telegram_bot_token: Secret | None
    telegram_api_base_url: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: Secret | None = None
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = 8443
    relay_rasa_timeout: float = 8.0
    telegram_send_rate: float = 30.0
    relay_outbox_path: Path = VAR_DIR / "relay-outbox.db"
    sender_id_key: Secret | None = None
    clinic_secret_key: Secret | None = None
    clinic_https_only: bool = False
    clinic_alert_webhook_url: str | None = None
    clinic_alert_chat_id: str | None = None
    clinic_alert_levels: tuple[str, ...] = ("emergency",)
    clinic_public_url: str | None = None
    clinic_escalation_webhook_url: str | None = None
    clinic_escalation_chat_id: str | None = None
    clinic_escalate_after: str | None = None  # minutes, "emergency=10,urgent=60" (bot/clinic/worklist.py)
    fhir_identifier_system: str | None = None
    clinic_timezone: str = "UTC"
    status_port: int = 5098
    clinic_worker_port: int = 5099
    log_dir: Path = VAR_DIR / "log"
    retention_days: float = 365.0
    redis_url: Secret | None = None
    relay_rasa_url: str | None = None

    def as_env(self) -> dict[str, str]:
        """These settings as the environment variables `load_settings` reads (for child processes)."""
        env = {}
        for name, attribute in ENV_VARIABLES.items():
            value = getattr(self, attribute)
            if isinstance(value, bool):
                value = "1" if value else None
            elif isinstance(value, tuple):
                value = ",".join(value)
            if value is not None:
                env[name] = str(value)
        return env

    @property
    def rasa_url(self) -> str:
        return f"http://127.0.0.1:{self.rasa_port}"

    @property
    def clinic_url(self) -> str:
        return f"http://127.0.0.1:{self.clinic_port}"

    @property
    def clinic_worker_url(self) -> str:
        return f"http://127.0.0.1:{self.clinic_worker_port}"

    @property
    def actions_url(self) -> str:
        return f"http://127.0.0.1:{self.actions_port}"


def _file_secret(name: str, configured: str | None) -> str:
    """A secret from the environment, else one generated once and kept in var/<name> (mode 600)."""
    if configured:
        return configured
    path = VAR_DIR / name
    try:
        return path.read_text().strip()
    except OSError:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        path.touch(mode=0o600)
        path.write_text(token)
        return token


def load_settings(env_file: Path | None = None) -> Settings:
    """Settings from the environment, then from `.env` in the project (or `$CRS_ENV_FILE`; empty:
    none, which is how child processes run: their parent hands them every setting explicitly,
    so a `.env` cannot add an alert channel to a throw-away stack)."""
    named = os.environ.get("CRS_ENV_FILE")
    if env_file is None and named is not None:
        env_file = Path(named) if named else None
    elif env_file is None:
        env_file = PROJECT_ROOT / ".env"
    config = Config(env_file if env_file is not None and env_file.exists() else None)
    telegram = config("TELEGRAM_BOT_TOKEN", default=None)
    return Settings(
        database_url=config("DATABASE_URL", default=DEFAULT_DATABASE_URL),
        rasa_port=config("RASA_PORT", cast=int, default=5005),
        actions_port=config("ACTIONS_PORT", cast=int, default=5055),
        clinic_port=config("CLINIC_PORT", cast=int, default=8000),
        rasa_api_token=Secret(_file_secret("rasa-api-token", config("RASA_API_TOKEN", default=None))),
        telegram_bot_token=Secret(telegram) if telegram else None,
        telegram_api_base_url=config("TELEGRAM_API_BASE_URL", default=None),
        telegram_webhook_url=config("TELEGRAM_WEBHOOK_URL", default=None),
        telegram_webhook_secret=config("TELEGRAM_WEBHOOK_SECRET", cast=Secret, default=None),
        telegram_webhook_listen=config("TELEGRAM_WEBHOOK_LISTEN", default="127.0.0.1"),
        telegram_webhook_port=config("TELEGRAM_WEBHOOK_PORT", cast=int, default=8443),
        relay_rasa_timeout=config("RELAY_RASA_TIMEOUT", cast=float, default=8.0),
        # Messages per second the relay sends to Telegram, all chats together. Telegram's FAQ
        # says "not more than 30 messages per second or so"; paid broadcasts allow up to 1,000.
        telegram_send_rate=config("TELEGRAM_SEND_RATE", cast=float, default=30.0),
        relay_outbox_path=Path(config("RELAY_OUTBOX_PATH", default=str(VAR_DIR / "relay-outbox.db"))),
        # Telegram chat ids are turned into pseudonymous Rasa sender ids with this key (HMAC).
        # Every relay replica must share it; losing it starts new conversations, loses no data.
        sender_id_key=Secret(_file_secret("sender-id-key", config("SENDER_ID_KEY", default=None))),
        # Signs the clinic app's session cookies; share it between clinic app replicas.
        clinic_secret_key=Secret(_file_secret("clinic-secret-key", config("CLINIC_SECRET_KEY", default=None))),
        clinic_https_only=config("CLINIC_HTTPS_ONLY", cast=bool, default=False),
        clinic_alert_webhook_url=config("CLINIC_ALERT_WEBHOOK_URL", default=None),
        clinic_alert_chat_id=config("CLINIC_ALERT_CHAT_ID", default=None),
        clinic_alert_levels=tuple(
            level.strip() for level in config("CLINIC_ALERT_LEVELS", default="emergency").split(",") if level.strip()
        ),
        # How alert messages link to a conversation (the clinic app as staff reach it).
        clinic_public_url=config("CLINIC_PUBLIC_URL", default=None),
        # Where an item nobody acknowledged in time goes (once); the alert channels again if unset.
        clinic_escalation_webhook_url=config("CLINIC_ESCALATION_WEBHOOK_URL", default=None),
        clinic_escalation_chat_id=config("CLINIC_ESCALATION_CHAT_ID", default=None),
        clinic_escalate_after=config("CLINIC_ESCALATE_AFTER", default=None),
        # The URI under which FHIR exports identify patients (your organisation's, e.g. its MRN system).
        fhir_identifier_system=config("FHIR_IDENTIFIER_SYSTEM", default=None),
        # The clinic's time zone (IANA name, e.g. America/Chicago): day 0 of a patient's chart starts
        # at midnight there, so an evening reading on the infusion day is day 0, not day 1.
        clinic_timezone=config("CLINIC_TIMEZONE", default="UTC"),
        # `make run`'s supervisor answers `/status` and `/health` here, on loopback (bot/supervisor.py).
        status_port=config("STATUS_PORT", cast=int, default=5098),
        # The clinic worker's `/health` (bot/clinic/worker.py), loopback unless `--host`.
        clinic_worker_port=config("CLINIC_WORKER_PORT", cast=int, default=5099),
        # where `make run` writes each part's log (<name>.log)
        log_dir=Path(config("LOG_DIR", default=str(VAR_DIR / "log"))),
        retention_days=config("RETENTION_DAYS", cast=float, default=365.0),
        # Several Rasa replicas: their conversation locks in Redis (bot/rasa_plugins/lock_store.py).
        redis_url=config("REDIS_URL", cast=Secret, default=None) or None,
        # Where the relay finds Rasa when it is not on this host (a Kubernetes Service, a load balancer).
        relay_rasa_url=config("RELAY_RASA_URL", default=None),
    )

"""Child processes see exactly their settings: a shell's alert channel never reaches a throw-away stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.servers import child_env, isolated_settings
from bot.settings import ENV_VARIABLES, Settings, load_settings


def test_a_throwaway_stack_does_not_inherit_the_shells_alert_channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLINIC_ALERT_WEBHOOK_URL", "https://pager.example.org/on-call")
    monkeypatch.setenv("CLINIC_ESCALATION_CHAT_ID", "-100999")
    monkeypatch.setenv("DATABASE_URL", "postgresql://live/clinic")
    monkeypatch.setenv("UNRELATED_VARIABLE", "kept")
    env = child_env(isolated_settings(tmp_path))
    assert "CLINIC_ALERT_WEBHOOK_URL" not in env and "CLINIC_ESCALATION_CHAT_ID" not in env
    assert env["DATABASE_URL"].startswith("sqlite:///") and str(tmp_path) in env["DATABASE_URL"]
    assert env["UNRELATED_VARIABLE"] == "kept"


def test_a_child_reads_no_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / "crs.env"
    dotenv.write_text("CLINIC_ALERT_WEBHOOK_URL=https://pager.example.org/from-dotenv\n")
    monkeypatch.setenv("CRS_ENV_FILE", str(dotenv))
    assert load_settings().clinic_alert_webhook_url == "https://pager.example.org/from-dotenv", "the file is read (the check can fail)"
    for key, value in child_env(isolated_settings(tmp_path)).items():
        monkeypatch.setenv(key, value)
    for key in ENV_VARIABLES:
        if key not in child_env(isolated_settings(tmp_path)):
            monkeypatch.delenv(key, raising=False)
    assert load_settings().clinic_alert_webhook_url is None, "a child process takes nothing from a .env"


def test_every_setting_has_its_environment_variable() -> None:
    fields = set(Settings.__dataclass_fields__)
    assert set(ENV_VARIABLES.values()) == fields, fields ^ set(ENV_VARIABLES.values())

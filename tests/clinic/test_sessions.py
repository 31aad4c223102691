"""Staff sessions live on the server: logging out, disabling an account or a new password end
them at once, whatever cookie a browser still holds (the app in-process, a real SQLite file)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from bot.clinic import accounts
from bot.clinic.app import create_app
from bot.clinic.schema import SESSIONS, create_tables
from bot.db import create_db_engine

PASSWORD = "correct horse battery"


@pytest.fixture
def engine(tmp_path: Path) -> sa.engine.Engine:
    e = create_db_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    create_tables(e)
    accounts.add_user(e, "nurse", PASSWORD, "viewer")
    accounts.add_user(e, "boss", PASSWORD + "!", "admin")
    return e


def signed_in(engine: sa.engine.Engine, username: str = "nurse", password: str = PASSWORD) -> TestClient:
    client = TestClient(create_app(engine, "session-test-secret"), follow_redirects=False)
    form = client.get("/login").text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)  # type: ignore[union-attr]
    response = client.post("/login", data={"csrf": csrf, "username": username, "password": password, "next": "/"})
    assert response.status_code == 303, response.text
    return client


def allowed(client: TestClient) -> bool:
    return client.get("/worklist").status_code == 200


def csrf_of(client: TestClient, path: str = "/worklist") -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get(path).text).group(1)  # type: ignore[union-attr]


def test_logging_out_ends_every_session_of_the_account(engine: sa.engine.Engine) -> None:
    desk, phone, other = signed_in(engine), signed_in(engine), signed_in(engine, "boss", PASSWORD + "!")
    assert allowed(desk) and allowed(phone) and allowed(other)
    stolen_cookie = dict(phone.cookies)
    assert desk.post("/logout", data={"csrf": csrf_of(desk)}).status_code == 303
    assert not allowed(desk) and not allowed(phone), "the phone's session ended with the desk's logout"
    replay = TestClient(create_app(engine, "session-test-secret"), follow_redirects=False, cookies=stolen_cookie)
    assert replay.get("/worklist").status_code == 303, "a copied cookie of an ended session is refused"
    assert allowed(other), "another account's session goes on"


def test_disabling_an_account_ends_its_sessions_and_refuses_its_login(engine: sa.engine.Engine) -> None:
    client = signed_in(engine)
    accounts.set_disabled(engine, "nurse", True)
    assert not allowed(client)
    again = TestClient(create_app(engine, "session-test-secret"), follow_redirects=False)
    csrf = re.search(r'name="csrf" value="([^"]+)"', again.get("/login").text).group(1)  # type: ignore[union-attr]
    refused = again.post("/login", data={"csrf": csrf, "username": "nurse", "password": PASSWORD, "next": "/"})
    assert refused.status_code == 401 and "Wrong username or password" in refused.text
    accounts.set_disabled(engine, "nurse", False)
    assert allowed(signed_in(engine))


def test_a_new_password_ends_the_other_sessions_and_keeps_this_one(engine: sa.engine.Engine) -> None:
    here, elsewhere = signed_in(engine), signed_in(engine)
    new = "a much better passphrase"
    wrong = here.post("/account/password", data={"csrf": csrf_of(here), "current": "nope", "new": new, "again": new})
    assert wrong.status_code == 400 and allowed(elsewhere)
    done = here.post("/account/password", data={"csrf": csrf_of(here), "current": PASSWORD, "new": new, "again": new})
    assert done.status_code == 200 and "Password changed" in done.text
    assert allowed(here) and not allowed(elsewhere)
    assert allowed(signed_in(engine, password=new))
    accounts.set_password(engine, "nurse", "set by an admin on the CLI")
    assert not allowed(here), "an admin's reset ends the user's own session too"


def test_only_a_hash_of_the_session_id_is_stored(engine: sa.engine.Engine) -> None:
    session_id = accounts.start_session(engine, "nurse")
    with engine.connect() as conn:
        stored = conn.execute(sa.select(SESSIONS.c.id_hash)).scalars().all()
    assert session_id not in stored and len(stored) == 1
    assert accounts.session_staff(engine, session_id) == accounts.Staff("nurse", "viewer")
    assert accounts.session_staff(engine, session_id, now=10**12) is None, "expired"

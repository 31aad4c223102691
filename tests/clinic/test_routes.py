"""Every route the clinic app declares needs a session: enumerated from the app, not listed by hand."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from bot.clinic.app import create_app
from bot.clinic.schema import create_tables
from bot.db import create_db_engine

PUBLIC = {("GET", "/login"), ("POST", "/login"), ("GET", "/health")}


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'clinic.db'}")
    create_tables(engine)
    return TestClient(create_app(engine, "route-test-secret"), follow_redirects=False)


def _requests(client: TestClient) -> list[tuple[str, str]]:
    found = []
    for route in client.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            path = route.path.replace("{sender_id:str}", "P-1234").replace("{code:str}", "ABC").replace("{item_id:int}", "1")
            found += [(method, path) for method in sorted(route.methods or {"GET"}) if method != "HEAD"]
        else:
            assert isinstance(route, Mount) and route.path == "/static", f"unexpected mount {route.path}"
    return found


def test_every_declared_route_needs_a_session(client: TestClient) -> None:
    routes = _requests(client)
    assert len(routes) >= 14, routes
    for method, path in routes:
        response = client.request(method, path)
        if (method, path) in PUBLIC:
            assert response.status_code in {200, 400, 403}, (method, path)  # the form, or refused for CSRF
            continue
        assert response.status_code in {303, 403}, (method, path, response.status_code)
        if response.status_code == 303:
            assert response.headers["location"].startswith("/login"), (method, path)
        assert "P-1234" not in response.text and "<table" not in response.text, (method, path)


def test_security_headers_on_every_response(client: TestClient) -> None:
    for method, path in _requests(client):
        headers = client.request(method, path).headers
        assert headers["x-frame-options"] == "DENY", path
        assert headers["x-content-type-options"] == "nosniff", path
        assert "default-src" in headers["content-security-policy"], path
        assert headers["referrer-policy"] == "no-referrer", path

"""The clinic review app in a real browser (Debian's chromium driven by Playwright) against the
real stack: conversations come from the Rasa server, the app reads the same database."""

from __future__ import annotations

import csv
import dataclasses
import http.server
import io
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from fhir.resources.bundle import Bundle
from playwright.sync_api import Browser, Page, sync_playwright

from bot.evaluate import RestClient
from bot.servers import Stack, child_env, isolated_settings
from bot.settings import Settings
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
ADMIN, VIEWER, PASSWORD = "nurse.admin", "dr.viewer", "correct horse battery"
XSS = "<script>alert('xss')</script> and '; DROP TABLE events; -- my lips are blue"


class AlertReceiver(http.server.ThreadingHTTPServer):
    """A clinic's alert endpoint on loopback: records each POST; the first one fails (HTTP 500)."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.failed_once = False
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not receiver.failed_once:
                    receiver.failed_once = True
                    self.send_response(500)
                else:
                    receiver.received.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/alerts"


@dataclass
class Clinic:
    settings: Settings
    url: str
    emergency_sender: str
    xss_sender: str
    log_dir: Path
    alerts: AlertReceiver
    client: RestClient


def add_user(settings: Settings, name: str, role: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "bot", "users", "add", name, "--role", role, "--password-stdin"],
        input=PASSWORD + "\n", text=True, check=True, env=child_env(settings), capture_output=True,
    )  # fmt: skip


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def clinic(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Clinic]:
    """The clinic app over the shared SQLite stack, then over a PostgreSQL-backed stack of its own."""
    own_stack: Stack | None = None
    if request.param == "sqlite":
        settings = request.getfixturevalue("stack").settings
    else:
        cluster = request.getfixturevalue("pg_cluster")  # skipped where PostgreSQL is not installed
        tmp = tmp_path_factory.mktemp("pg-stack")
        settings = isolated_settings(tmp, database_url=cluster.create_database("clinic"))
        own_stack = Stack(settings, log_dir=tmp)
        own_stack.start()
    client = RestClient(settings.rasa_url, str(settings.rasa_api_token))
    for name, role in ((ADMIN, "admin"), (VIEWER, "viewer")):
        add_user(settings, name, role)
    mild = f"clinic-mild-{uuid.uuid4().hex[:6]}"
    client.send(mild, "I have a mild headache")
    xss = f"clinic-xss-{uuid.uuid4().hex[:6]}"
    client.send(xss, XSS)
    emergency = f"clinic-emergency-{uuid.uuid4().hex[:6]}"
    client.send(emergency, "I had Kymriah 3 days ago")
    client.send(emergency, "my oxygen sats are 88% on the home monitor")
    log_dir = tmp_path_factory.mktemp("clinic")
    receiver = AlertReceiver()
    clinic_settings = dataclasses.replace(settings, clinic_alert_webhook_url=receiver.url)
    clinic_stack = Stack(clinic_settings, log_dir=log_dir)
    clinic_stack.start_clinic()
    yield Clinic(settings, settings.clinic_url, emergency, xss, log_dir, receiver, client)
    clinic_stack.stop()
    receiver.shutdown()
    if own_stack is not None:
        own_stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Module scope: Playwright's sync API keeps an event loop running while it is open, which
    the asyncio tests of other modules must not find."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(accept_downloads=True)
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def log_in(page: Page, clinic: Clinic, user: str = ADMIN, password: str = PASSWORD) -> None:
    page.goto(f"{clinic.url}/login")
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", password)
    with page.expect_navigation():  # the next step must not race the login redirect
        page.click("button[type=submit]")


def first_row_when_ready(page: Page, clinic: Clinic, sender: str) -> None:
    """The app indexes new events every second: reload until the seeded conversation shows."""

    def on_top() -> bool:
        page.goto(f"{clinic.url}/")
        return sender in (page.get_attribute("#conversations tbody tr:first-child a", "href") or "")

    wait_until(on_top, timeout=20, what="seeded emergency conversation at the top")


def test_emergency_first_reason_shown_and_exports(page: Page, clinic: Clinic) -> None:
    log_in(page, clinic)
    first_row_when_ready(page, clinic, clinic.emergency_sender)
    first = page.locator("#conversations tbody tr").first
    assert first.locator("td.level").inner_text() == "emergency"
    assert "Kymriah" in first.inner_text()
    first.locator("a").click()
    reasons = page.locator("li.reason").all_inner_texts()
    assert any("88" in r and "difficulty_breathing" in r and "emergency" in r for r in reasons), reasons
    assert "my oxygen sats are 88%" in page.locator(".transcript").inner_text()

    with page.expect_download() as download:
        page.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    patient = [r for r in rows if r["from"] == "patient"]
    assert [r["text"] for r in patient] == ["I had Kymriah 3 days ago", "my oxygen sats are 88% on the home monitor"]
    assert "difficulty_breathing" in patient[1]["symptoms_present"] and patient[1]["level_after"] == "emergency"

    with page.expect_download() as download:
        page.click("text=Export FHIR")
    bundle_json = json.loads(Path(download.value.path()).read_text())
    Bundle.parse_obj(bundle_json)  # raises if not a valid FHIR Bundle
    resources = [e["resource"] for e in bundle_json["entry"]]
    observations = [r for r in resources if r["resourceType"] == "Observation"]
    present = {o["code"]["coding"][0]["code"] for o in observations if o.get("valueBoolean") is True}
    assert "difficulty_breathing" in present
    triage = next(o for o in observations if "valueCodeableConcept" in o)
    assert triage["valueCodeableConcept"]["coding"][0]["code"] == "emergency"
    assert any("88" in n["text"] for n in triage["note"])


def test_list_csv_export_follows_filters(page: Page, clinic: Clinic) -> None:
    log_in(page, clinic)
    page.goto(f"{clinic.url}/?level=emergency")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows and {r["highest_level"] for r in rows} == {"emergency"}
    assert any(r["therapy"].lower().startswith("kymriah") or "tisagenlecleucel" in r["therapy"].lower() for r in rows)


def test_wrong_password_is_refused_then_locked_out(page: Page, clinic: Clinic) -> None:
    name = f"locktest{uuid.uuid4().hex[:6]}"
    add_user(clinic.settings, name, "viewer")
    log_in(page, clinic, name, "wrong password!")
    assert "Wrong username or password" in page.inner_text("body")
    for _ in range(4):
        log_in(page, clinic, name, "wrong password!")
    log_in(page, clinic, name, PASSWORD)  # the right password no longer helps
    assert "locked" in page.inner_text("body")
    assert page.url.endswith("/login")


@pytest.mark.parametrize(
    "path",
    ["/", "/trends", "/admin/audit", "/export/conversations.csv", "/conversations/x", "/conversations/x/fhir.json", "/nope"],
)
def test_every_page_without_a_session_goes_to_login(clinic: Clinic, path: str) -> None:
    r = requests.get(f"{clinic.url}{path}", allow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_patient_text_is_escaped(page: Page, clinic: Clinic) -> None:
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    log_in(page, clinic)
    page.goto(f"{clinic.url}/conversations/{clinic.xss_sender}")
    assert XSS in page.locator(".transcript").inner_text()
    assert page.locator(".transcript script").count() == 0
    assert dialogs == []


def test_viewer_cannot_open_admin_pages(page: Page, clinic: Clinic) -> None:
    log_in(page, clinic, VIEWER)
    assert page.locator("#conversations").count() == 1
    response = page.goto(f"{clinic.url}/admin/audit")
    assert response is not None and response.status == 403
    assert "Admins only" in page.inner_text("body")


def test_admin_sees_audit_of_views_and_exports(page: Page, clinic: Clinic) -> None:
    log_in(page, clinic)
    page.goto(f"{clinic.url}/conversations/{clinic.emergency_sender}")
    page.goto(f"{clinic.url}/admin/audit")
    text = page.locator("#audit").inner_text()
    assert "view-conversation" in text and ADMIN in text
    assert "login-failed" in text, "failed logins are audited too"
    assert XSS not in text, "the audit log holds no message content"


def test_forms_need_the_csrf_token(clinic: Clinic) -> None:
    http = requests.Session()
    http.get(f"{clinic.url}/login", timeout=10)
    r = http.post(f"{clinic.url}/login", data={"username": ADMIN, "password": PASSWORD}, allow_redirects=False, timeout=10)
    assert r.status_code == 400
    r = http.post(
        f"{clinic.url}/login", data={"username": ADMIN, "password": PASSWORD, "csrf": "forged"}, allow_redirects=False, timeout=10
    )
    assert r.status_code == 400


def test_security_headers_and_cookie_flags(clinic: Clinic) -> None:
    r = requests.get(f"{clinic.url}/login", timeout=10)
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie


@pytest.mark.parametrize("target", ["//evil.example/", "https://evil.example/", "/\\evil.example"])
def test_no_open_redirect_after_login(page: Page, clinic: Clinic, target: str) -> None:
    page.goto(f"{clinic.url}/login?next={requests.utils.quote(target)}")
    page.fill("input[name=username]", ADMIN)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    assert page.url.startswith(clinic.url)


def test_emergency_alert_is_sent_exactly_once_after_a_failure(page: Page, clinic: Clinic) -> None:
    def for_seeded() -> list[dict]:
        return [a for a in clinic.alerts.received if a["conversation"].endswith(clinic.emergency_sender)]

    wait_until(lambda: len(for_seeded()) == 1, what="alert delivered")
    alert = for_seeded()[0]
    assert alert["level"] == "emergency" and "difficulty breathing" in " ".join(alert["symptoms"]).lower()
    assert set(alert) == {"event", "level", "patient", "therapy", "symptoms", "conversation", "raised_at"}
    words = json.dumps(alert).lower()
    assert "sats" not in words and "home monitor" not in words, "no patient words in the alert"
    clinic.client.send(clinic.emergency_sender, "and now I am confused too")  # still emergency: no second alert
    time.sleep(3)
    assert len(for_seeded()) == 1
    assert clinic.alerts.failed_once, "the first delivery failed and was retried"
    log_in(page, clinic)
    page.goto(f"{clinic.url}/alerts")
    statuses = page.locator("#alerts td.status").all_inner_texts()
    assert "sent" in statuses


def test_enrolment_links_patient_and_gives_triage_the_therapy(page: Page, clinic: Clinic) -> None:
    log_in(page, clinic)
    page.goto(f"{clinic.url}/admin/enrolments")
    page.fill("input[name=label]", "Bed 12 — J. Doe")
    page.select_option("select[name=therapy]", "blinatumomab")
    page.fill("input[name=infusion_date]", "2026-11-20")
    page.click("text=Create code")
    code = page.locator("#created .code").inner_text()
    assert len(code) == 9

    sender = f"tg-enrolled-{uuid.uuid4().hex[:8]}"
    s = clinic.settings
    post = lambda text, mid: requests.post(  # noqa: E731 - the relay channel, as the Telegram relay calls it
        f"{s.rasa_url}/webhooks/relay/webhook",
        json={"sender": sender, "message": text, "message_id": mid, "metadata": {"telegram": {"enrolment_code": code.lower()}}},
        headers={"Authorization": f"Bearer {s.rasa_api_token}"},
        timeout=30,
    ).json()
    post("/greet", "1")
    replies = " ".join(m.get("text", "") for m in post("I have a mild headache", "2")["messages"])
    tracker = clinic.client.tracker(sender)
    assert tracker["slots"]["therapy"].startswith("blinatumomab") and tracker["slots"]["on_immunotherapy"] is True
    assert tracker["slots"]["triage_level"] == "urgent"
    assert "Are you receiving immunotherapy" not in replies, "the enrolment already told the bot"

    def listed() -> bool:
        page.goto(f"{clinic.url}/?therapy=blinatumomab")
        return "Bed 12" in page.locator("#conversations").inner_text()

    wait_until(listed, what="enrolled conversation listed under its label")
    row = page.locator("#conversations tbody tr", has_text="Bed 12")
    assert "blinatumomab (blincyto)" in row.inner_text().lower()
    page.goto(f"{clinic.url}/patients/{code}")
    assert "headache" in page.locator("#timeline").inner_text().lower()


def test_logout_ends_the_session(page: Page, clinic: Clinic) -> None:
    log_in(page, clinic, VIEWER)
    assert page.locator("#conversations").count() == 1
    page.click("text=Log out")
    assert page.url.endswith("/login")
    page.goto(f"{clinic.url}/")
    assert page.url.startswith(f"{clinic.url}/login"), "the old session no longer opens pages"

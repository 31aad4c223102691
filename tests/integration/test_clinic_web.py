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
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from fhir.resources.bundle import Bundle
from playwright.sync_api import Browser, Page, sync_playwright

from bot.clinic.labels import pseudonym
from bot.clinic.schema import SUMMARIES, WORKLIST
from bot.clinical.knowledge import load_knowledge_base
from bot.db import create_db_engine
from bot.servers import Stack, child_env, isolated_settings
from bot.settings import Settings
from tests.integration.conftest import wait_until
from tools.evaluate import RestClient

pytestmark = pytest.mark.integration
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]  # fmt: skip
ADMIN, VIEWER, PASSWORD = "nurse.admin", "dr.viewer", "correct horse battery"
XSS = "<script>alert('xss')</script> and '; DROP TABLE events; -- my lips are blue"
ESCALATE_AFTER_S = 6  # CLINIC_ESCALATE_AFTER for emergencies, in seconds, so a test can wait for it


class AlertReceiver(http.server.ThreadingHTTPServer):
    """A clinic's alert endpoint on loopback: records each POST; the first one fails (HTTP 500)
    unless `fail_first` is False."""

    def __init__(self, fail_first: bool = True) -> None:
        self.received: list[dict] = []
        self.failed_once = not fail_first
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
    client: RestClient  # a stand-in patient: not tagged as test traffic
    escalations: AlertReceiver


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
    client = RestClient(settings.rasa_url, str(settings.rasa_api_token), test_traffic=False)
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
    receiver, escalations = AlertReceiver(), AlertReceiver(fail_first=False)
    clinic_settings = dataclasses.replace(
        settings,
        clinic_alert_webhook_url=receiver.url,
        clinic_escalation_webhook_url=escalations.url,
        clinic_escalate_after=f"emergency={ESCALATE_AFTER_S / 60}",
    )
    clinic_stack = Stack(clinic_settings, log_dir=log_dir)
    clinic_stack.start_clinic()
    yield Clinic(settings, settings.clinic_url, emergency, xss, log_dir, receiver, client, escalations)
    clinic_stack.stop()
    receiver.shutdown()
    escalations.shutdown()
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
    """The clinic worker indexes new events every second: reload until the seeded conversation shows."""

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
    said = {"present": [], "absent": []}  # SNOMED CT Present / Absent qualifier values
    for o in observations:
        if "valueCodeableConcept" in o:
            said[o["valueCodeableConcept"]["text"]].append(o["code"]["coding"][0]["code"])
    present = set(said["present"])
    breathing = load_knowledge_base().symptoms["difficulty_breathing"].snomed
    assert breathing is not None and breathing[0] in present, "coded in SNOMED CT from data/clinical.yml"
    risk = next(r for r in resources if r["resourceType"] == "RiskAssessment")
    assert risk["prediction"][0]["outcome"]["text"] == "emergency"
    assert any("88" in n["text"] for n in risk["note"])


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
    assert set(alert) == {
        "event",
        "item",
        "not_acknowledged_for_min",
        "level",
        "patient",
        "therapy",
        "symptoms",
        "conversation",
        "raised_at",
    }
    assert alert["event"] == "crs.triage_alert" and alert["not_acknowledged_for_min"] is None
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


# ---------------------------------------------------------------------- worklist, chart, sessions, test traffic
def relay_post(settings: Settings, sender: str, text: str, message_id: str, code: str | None = None, **telegram: Any) -> dict:
    """A patient's message as the Telegram relay hands it to Rasa (with the deep-link code, if any)."""
    metadata = {"telegram": {**({"enrolment_code": code} if code else {}), **telegram}} if code or telegram else {}
    return requests.post(
        f"{settings.rasa_url}/webhooks/relay/webhook",
        json={"sender": sender, "message": text, "message_id": message_id, "metadata": metadata},
        headers={"Authorization": f"Bearer {settings.rasa_api_token}"},
        timeout=30,
    ).json()


def item_row(page: Page, sender: str) -> Any:
    return page.locator(f'#worklist tbody tr:has(a[href="/conversations/{sender}"])')


def test_worklist_item_escalates_once_then_a_nurse_acknowledges_and_closes_it(page: Page, clinic: Clinic) -> None:
    sender = f"clinic-worklist-{uuid.uuid4().hex[:8]}"
    clinic.client.send(sender, "I had CAR-T 4 days ago and my husband says my lips look blue")
    log_in(page, clinic)

    def listed() -> bool:
        page.goto(f"{clinic.url}/worklist")
        return item_row(page, sender).count() == 1

    wait_until(listed, timeout=20, what="an emergency conversation opens a worklist item")
    row = item_row(page, sender)
    assert row.locator("td.level").inner_text() == "emergency" and "skin_discoloration" in row.inner_text()
    assert row.locator("button.ack").count() == 1, "not acknowledged yet"

    def escalations() -> list[dict]:
        return [e for e in clinic.escalations.received if e["conversation"].endswith(sender)]

    wait_until(lambda: len(escalations()) == 1, timeout=ESCALATE_AFTER_S + 20, what="escalation to the second channel")
    assert escalations()[0]["event"] == "crs.triage_escalation" and escalations()[0]["level"] == "emergency"
    assert not [a for a in clinic.alerts.received if a["conversation"].endswith(sender) and a["event"] != "crs.triage_alert"]
    time.sleep(3)
    assert len(escalations()) == 1, "escalated once, not every round"
    page.reload()
    assert "escalated" in item_row(page, sender).inner_text()

    item_row(page, sender).locator("button.ack").click()
    page.wait_for_load_state()
    assert f"Acknowledged by {ADMIN}" in item_row(page, sender).inner_text()
    item_row(page, sender).locator("select[name=outcome]").select_option("sent_to_ed")
    item_row(page, sender).locator("input[name=note]").fill("Husband driving her to ED, called ahead")
    item_row(page, sender).locator("form.close button").click()
    page.wait_for_load_state()
    assert item_row(page, sender).count() == 0, "a closed item leaves the open list"
    page.goto(f"{clinic.url}/worklist?status=closed")
    closed = item_row(page, sender).inner_text()
    assert "Sent to the emergency department" in closed and "called ahead" in closed and ADMIN in closed

    page.goto(f"{clinic.url}/trends")
    week = page.locator("#response-times tbody tr", has_text="7 days").filter(has_text="emergency").locator("td")
    assert int(week.nth(2).inner_text()) >= 1, "items opened this week"
    assert all(week.nth(i).inner_text() != "–" for i in (4, 5, 6, 7)), "acknowledge and close p50/p90 shown"
    with page.expect_download() as download:
        page.click("#response-times-export")
    times = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    emergency = next(r for r in times if r["level"] == "emergency" and r["window_days"] == "7")
    assert int(emergency["items"]) >= 1 and float(emergency["ack_p50_s"]) >= 0 and float(emergency["close_p90_s"]) >= 0

    page.goto(f"{clinic.url}/worklist?status=closed")
    with page.expect_download() as download:
        page.click("text=Export CSV")
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    mine = next(r for r in rows if "Husband driving" in r["note"])
    assert mine["outcome"] == "sent_to_ed" and mine["acknowledged_by"] == ADMIN
    assert int(mine["seconds_to_acknowledge"]) >= ESCALATE_AFTER_S, "acknowledged after it escalated"
    assert int(mine["seconds_to_close"]) >= int(mine["seconds_to_acknowledge"]) and mine["escalated_utc"]
    page.goto(f"{clinic.url}/admin/audit")
    audit = page.locator("#audit").inner_text()
    assert "ack-item" in audit and "close-item" in audit and "outcome=sent_to_ed" in audit


def test_patient_page_charts_temperature_in_celsius_and_pulse_by_day_since_infusion(page: Page, clinic: Clinic) -> None:
    log_in(page, clinic)
    page.goto(f"{clinic.url}/admin/enrolments")
    page.fill("input[name=label]", "Bed 7 — chart test")
    page.select_option("select[name=therapy]", "blinatumomab")
    infusion = time.gmtime(time.time() - 3 * 86400)
    page.fill("input[name=infusion_date]", time.strftime("%Y-%m-%d", infusion))
    page.click("text=Create code")
    code = page.locator("#created .code").inner_text()
    sender = f"tg-chart-{uuid.uuid4().hex[:8]}"
    relay_post(clinic.settings, sender, "/greet", "1", code)
    relay_post(clinic.settings, sender, "temp 102.5F this morning, feel awful", "2", code)
    relay_post(clinic.settings, sender, "pulse is 128 now. what if it gets to 104F?", "3", code)

    def charted() -> bool:
        page.goto(f"{clinic.url}/patients/{code}")
        return page.locator("#vitals-chart rect.pulse").count() == 1

    wait_until(charted, timeout=20, what="readings on the patient's chart")
    temps = page.locator("#vitals-chart circle.temperature")
    assert temps.count() == 1, "the hypothetical 104F is no reading"
    assert temps.first.get_attribute("data-celsius") == "39.17", "102.5 °F is 39.17 °C"
    assert 3.0 <= float(temps.first.get_attribute("data-day") or 0) < 4.0, "day 3 after the infusion"
    assert page.locator("#vitals-chart rect.pulse").first.get_attribute("data-per-min") == "128.0"
    assert page.locator("#vitals-chart line.threshold").count() == 2, "fever and high-fever lines from data/"
    readings = page.locator("#readings").inner_text()
    assert "102.5 °F (39.2 °C)" in readings and "pulse 128/min" in readings
    page.goto(f"{clinic.url}/conversations/{sender}")
    assert "102.5 °F (39.2 °C)" in page.locator(".transcript .vitals").first.inner_text()


def test_an_escalated_neuro_check_reaches_the_transcript_and_the_worklist_naming_the_item(page: Page, clinic: Clinic) -> None:
    """What the relay sends Rasa when a caregiver's neuro check drops below the baseline (bot/checkins/neuro.py)."""
    sender = f"tg-neuro-{uuid.uuid4().hex[:8]}"
    found = {
        "check": "c1",
        "findings": [
            {"symptom": "confusion", "item": "month", "evidence": "caregiver neuro check: the month not right, right in an earlier check"}
        ],
    }  # noqa: E501
    reply = relay_post(clinic.settings, sender, "/report_symptoms", "neuro:c1", neuro_check=found)
    assert any("911" in str(m.get("text")) for m in reply["messages"]), reply
    log_in(page, clinic)

    def listed() -> bool:
        page.goto(f"{clinic.url}/worklist")
        return item_row(page, sender).count() == 1

    wait_until(listed, timeout=20, what="the emergency on the worklist")
    assert "the month not right" in item_row(page, sender).inner_text() and "emergency" in item_row(page, sender).inner_text().lower()
    page.goto(f"{clinic.url}/conversations/{sender}")
    transcript = page.locator(".transcript").inner_text()
    assert "[caregiver neuro check] caregiver neuro check: the month not right" in transcript and "/report_symptoms" not in transcript


def test_sessions_end_server_side_on_logout_and_when_an_account_is_disabled(browser: Browser, clinic: Clinic) -> None:
    name = f"nurse{uuid.uuid4().hex[:6]}"
    add_user(clinic.settings, name, "viewer")
    desk, phone = (browser.new_context().new_page() for _ in range(2))
    for p in (desk, phone):
        log_in(p, clinic, name)
        assert p.locator("#conversations").count() == 1
    desk.click("text=Log out")
    phone.goto(f"{clinic.url}/")
    assert phone.url.startswith(f"{clinic.url}/login"), "logging out on the desk ended the phone's session"

    log_in(phone, clinic, name)
    assert phone.locator("#conversations").count() == 1
    subprocess.run([sys.executable, "-m", "bot", "users", "disable", name], check=True, env=child_env(clinic.settings), capture_output=True)
    phone.goto(f"{clinic.url}/worklist")
    assert phone.url.startswith(f"{clinic.url}/login"), "a disabled account's session is refused at once"
    log_in(phone, clinic, name)
    assert "Wrong username or password" in phone.inner_text("body")
    for p in (desk, phone):
        p.context.close()


def test_test_traffic_and_evaluations_add_nothing_to_the_clinic_and_page_nobody(page: Page, clinic: Clinic, tmp_path: Path) -> None:
    tagged = RestClient(clinic.settings.rasa_url, str(clinic.settings.rasa_api_token))  # what `make eval` sends
    test_sender = f"eval-tagged-{uuid.uuid4().hex[:8]}"
    assert "911" in " ".join(m.get("text", "") for m in tagged.send(test_sender, "I can't breathe and my lips are blue"))
    cases = tmp_path / "cases.jsonl"
    cases.write_text(
        json.dumps({"id": "e1", "messages": ["my husband is confused and slurring"], "expect": {"triage": "emergency"}}) + "\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "tools", "eval", "--url", clinic.settings.rasa_url, "--cases", str(cases),
         "--out", str(tmp_path / "o.jsonl")],
        env=child_env(dataclasses.replace(clinic.settings, clinic_alert_webhook_url=clinic.alerts.url)),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "emergency sensitivity: 100.0% of 1" in run.stdout, "the case reached emergency: nobody paged for the right reason"
    untrusted = f"clinic-self-tagged-{uuid.uuid4().hex[:8]}"  # a tag without the API token is refused, nothing stored
    for headers in ({}, {"Authorization": "Bearer wrong-token"}):
        refused = requests.post(
            f"{clinic.settings.rasa_url}/webhooks/rest/webhook",
            json={"sender": untrusted, "message": "my lips are blue", "metadata": {"traffic": "test"}},
            headers=headers,
            timeout=30,
        )
        assert refused.status_code == 403, refused.text
    wrong = subprocess.run(
        [sys.executable, "-m", "tools", "eval", "--url", clinic.settings.rasa_url, "--cases", str(cases),
         "--out", str(tmp_path / "w.jsonl")],
        env={**child_env(clinic.settings), "RASA_API_TOKEN": "not-this-servers-token"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert wrong.returncode != 0 and "403" in wrong.stderr, "an evaluation with the wrong token stops at once"
    marker = f"clinic-after-eval-{uuid.uuid4().hex[:8]}"
    clinic.client.send(marker, "I had Kymriah and I feel ok today")  # a patient, written after all of them

    log_in(page, clinic)

    def patients(path: str) -> set[str]:
        """Every patient in a CSV export (all pages of the list): the shared stack holds many conversations."""
        response = page.request.get(f"{clinic.url}{path}")
        assert response.ok, response.status
        return {row["patient"] for row in csv.DictReader(io.StringIO(response.text()))}

    wait_until(
        lambda: pseudonym(marker) in patients("/export/conversations.csv?traffic=all"), timeout=30, what="indexed past the test traffic"
    )
    everything, shown = patients("/export/conversations.csv?traffic=all"), patients("/export/conversations.csv")
    assert pseudonym(test_sender) in everything, "test traffic is stored, and shown when asked for"
    assert pseudonym(test_sender) not in shown and pseudonym(marker) in shown, "hidden from the clinic's list, patients are not"
    assert pseudonym(untrusted) not in everything, "refused, not stored"
    assert pseudonym(test_sender) not in patients("/export/worklist.csv?status=all"), "no worklist item"
    engine = create_db_engine(clinic.settings.database_url)
    with engine.connect() as conn:  # the evaluation's own conversation (its sender id is made up inside `make eval`)
        evaluated = conn.execute(sa.select(SUMMARIES.c.sender_id, SUMMARIES.c.test).where(SUMMARIES.c.sender_id.like("eval-e1-%"))).all()
        items = conn.execute(sa.select(sa.func.count()).select_from(WORKLIST).where(WORKLIST.c.sender_id.like("eval-%"))).scalar_one()
    engine.dispose()
    assert len(evaluated) == 1 and evaluated[0].test is True and items == 0
    time.sleep(ESCALATE_AFTER_S + 6)  # past the first alert's retry and the escalation time
    paged = [a for a in clinic.alerts.received + clinic.escalations.received if "eval-" in a["conversation"]]
    assert paged == [], "nobody paged for an evaluation"

"""The Kubernetes manifests agree with the code: files they name exist, settings they set are
ones the product reads, and the multi-replica layout is the one `make scale-test` checks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from bot import PROJECT_ROOT

K8S = Path(PROJECT_ROOT) / "deploy" / "k8s"


def documents(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


@pytest.fixture(scope="module")
def applied() -> list[dict]:
    kustomization = documents("kustomization.yaml")[0]
    return [d for name in kustomization["resources"] for d in documents(name)]


def read_settings() -> set[str]:
    source = (Path(PROJECT_ROOT) / "bot" / "settings.py").read_text()
    return set(re.findall(r'config\("([A-Z_]+)"', source)) | {"SANIC_ACCESS_LOG", "TF_CPP_MIN_LOG_LEVEL"}


def pods(applied: list[dict]) -> dict[str, dict]:
    out = {}
    for d in applied:
        spec = d.get("spec", {})
        template = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
        if template:
            out[d["metadata"]["name"]] = template["spec"]
    return out


def test_kustomization_lists_existing_files() -> None:
    for name in documents("kustomization.yaml")[0]["resources"]:
        assert (K8S / name).is_file(), name


def test_every_setting_is_one_the_product_reads() -> None:
    known = read_settings()
    config = documents("config.yaml")[0]["data"]
    secret = documents("secret.example.yaml")[0]["stringData"]
    assert set(config) <= known, set(config) - known
    assert set(secret) <= known, set(secret) - known
    assert {"DATABASE_URL", "REDIS_URL", "RASA_API_TOKEN", "SENDER_ID_KEY", "TELEGRAM_WEBHOOK_SECRET"} <= set(secret)


def test_rasa_replicas_share_postgres_and_redis(applied: list[dict]) -> None:
    rasa = next(d for d in applied if d["kind"] == "Deployment" and d["metadata"]["name"] == "crs-rasa")
    assert rasa["spec"]["replicas"] >= 2
    containers = {c["name"]: c for c in rasa["spec"]["template"]["spec"]["containers"]}
    assert set(containers) == {"rasa", "actions"}
    args = containers["rasa"]["args"]
    assert args[:4] == ["python", "-m", "bot", "rasa"], "the entrypoint that refuses a damaged model"
    assert "--auth-token" not in args, "the API token comes from the environment, not the process list"
    assert {"name": "SANIC_HOST", "value": "127.0.0.1"} in containers["actions"]["env"], "the action server on loopback"
    for flag, value in (("--endpoints", "endpoints.yml"), ("--credentials", "credentials.yml"), ("--interface", "0.0.0.0")):  # noqa: S104 - the pod address
        assert args[args.index(flag) + 1] == value
        if value.endswith(".yml"):
            assert (Path(PROJECT_ROOT) / value).is_file()
    endpoints = yaml.safe_load((Path(PROJECT_ROOT) / "endpoints.yml").read_text())
    assert endpoints["lock_store"]["type"] == "bot.rasa_plugins.lock_store.ConfiguredLockStore"
    assert endpoints["action_endpoint"]["url"] == "http://localhost:${ACTIONS_PORT}/webhook", "the action server beside Rasa"
    assert "--port" in containers["actions"]["args"] and "ACTIONS_PORT" in documents("config.yaml")[0]["data"]


def test_every_pod_reads_its_settings_and_runs_locked_down(applied: list[dict]) -> None:
    for name, spec in pods(applied).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        for c in spec["containers"]:
            refs = {next(iter(r.values()))["name"] for r in c["envFrom"]}
            assert refs == {"crs-config", "crs-secrets"}, name
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert c["args"][0] in {"rasa", "python"}, name


def test_rasa_api_is_not_exposed(applied: list[dict]) -> None:
    ingress = next(d for d in applied if d["kind"] == "Ingress")
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"crs-relay", "crs-clinic"}


def _containers(applied: list[dict]) -> list[dict]:
    found = []
    for doc in applied:
        spec = (doc.get("spec") or {}).get("template", {}).get("spec", {})
        found += [c for c in spec.get("containers", []) if doc["kind"] in ("Deployment", "StatefulSet")]
    return found


def test_every_long_running_container_has_probes_that_reach_a_real_health_route(applied: list[dict]) -> None:
    """Probes ask what shows each process serving: the route exists in the code, and a process
    bound to loopback is probed from inside its container (the kubelet cannot reach 127.0.0.1)."""
    from starlette.routing import Route

    from bot.clinic.app import create_app
    from bot.db import create_db_engine

    clinic_paths = {r.path for r in create_app(create_db_engine("sqlite://"), "k").routes if isinstance(r, Route)}
    channels = (Path(PROJECT_ROOT) / "bot" / "rasa_plugins" / "channels.py").read_text()
    worker = (Path(PROJECT_ROOT) / "bot" / "clinic" / "worker.py").read_text()
    containers = _containers(applied)
    assert {c["name"] for c in containers} >= {"rasa", "actions", "relay", "clinic", "clinic-worker"}
    for c in containers:
        for kind in ("readinessProbe", "livenessProbe"):
            probe = c.get(kind)
            assert probe, f"{c['name']} has no {kind}"
            if "httpGet" in probe:
                path = probe["httpGet"]["path"]
                if c["name"] == "clinic":
                    assert path in clinic_paths, (c["name"], path)
                elif c["name"] == "rasa":
                    assert path == "/webhooks/relay/" and 'relay.add_route(_health, "/"' in channels
                elif c["name"] == "clinic-worker":
                    assert path == "/health" and 'add_get("/health"' in worker and "--host" in c["args"]
            elif "exec" in probe:
                assert "127.0.0.1:5055/health" in " ".join(probe["exec"]["command"]), c["name"]
            else:
                assert "tcpSocket" in probe and c["name"] == "relay", (c["name"], probe)
    clinic = next(c for c in containers if c["name"] == "clinic")
    assert clinic["readinessProbe"]["httpGet"]["path"] == "/health", "ready means the database answers"


def test_the_systemd_unit_restarts_on_failure_and_is_hardened() -> None:
    import configparser

    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(Path(PROJECT_ROOT) / "deploy" / "systemd" / "crs-symptom-checker.service")
    service = unit["Service"]
    assert service["ExecStart"].endswith("/.venv/bin/python -m bot run"), "the supervisor is the main process: it gets SIGTERM"
    assert service["ExecStartPre"] == "/usr/bin/make model" and service["Restart"] == "on-failure"
    assert service["User"] not in ("root", "") and service["EnvironmentFile"].startswith("/etc/")
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["KillMode"] == "mixed", "SIGTERM reaches the supervisor, which stops its children"
    writable = service["ReadWritePaths"].split()
    assert {"/opt/crs/var", "/opt/crs/.venv", "/opt/crs/models"} <= set(writable)
    assert service["CapabilityBoundingSet"] == "" and unit["Unit"]["StartLimitBurst"]


def test_systemd_rates_the_unit_well_hardened() -> None:
    """systemd's own exposure score for the unit (0 best, 10 worst) stays at or below 4.0 ("OK")."""
    import shutil
    import subprocess

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = Path(PROJECT_ROOT) / "deploy" / "systemd" / "crs-symptom-checker.service"
    run = subprocess.run([analyze, "security", "--offline=yes", "--threshold=40", str(unit)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stdout[-2000:]
    assert "Overall exposure level" in run.stdout

"""`make audit`: pip-audit over the pinned dependencies, with an honest verdict.

pip-audit asks a vulnerability service about each pinned version (PyPI's JSON API by default,
or OSV). Where neither is reachable it reports every package as "skipped" and still prints
"No known vulnerabilities found"; here that counts as a failed audit, not a clean one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from bot import PROJECT_ROOT

PIP_AUDIT = PROJECT_ROOT / ".venv-audit" / "bin" / "pip-audit"
REQUIREMENTS = [PROJECT_ROOT / "requirements" / "lock.txt", PROJECT_ROOT / "requirements" / "nodeps.txt"]


def run_audit(service: str = "pypi") -> dict[str, Any]:
    out = PROJECT_ROOT / "var" / "audit.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    cmd = [str(PIP_AUDIT), "--no-deps", "--disable-pip", "--vulnerability-service", service, "--format", "json", "--output", str(out)]
    for req in REQUIREMENTS:
        cmd += ["-r", str(req)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    report = json.loads(out.read_text()) if out.exists() and out.stat().st_size else {"dependencies": []}
    deps = report.get("dependencies", [])
    return {
        "service": service,
        "exit_code": run.returncode,
        "packages": len(deps),
        "skipped": [{"name": d["name"], "reason": d.get("skip_reason", "")} for d in deps if d.get("skip_reason")],
        "vulnerable": [
            {"name": d["name"], "version": d.get("version"), "id": v["id"], "fix_versions": v.get("fix_versions", [])}
            for d in deps
            for v in d.get("vulns", [])
        ],
        "stderr": run.stderr.strip().splitlines()[-3:],
    }


def main() -> int:
    result = run_audit()
    if result["packages"] and len(result["skipped"]) == result["packages"]:
        result = {**run_audit("osv"), "pypi_result": "every package skipped"}
    audited = result["packages"] - len(result["skipped"])
    counts = f"{result['packages']} pinned packages, {audited} audited, {len(result['skipped'])} skipped"
    sys.stdout.write(f"pip-audit ({result['service']}): {counts}\n")
    for v in result["vulnerable"]:
        sys.stdout.write(f"  {v['name']} {v['version']}: {v['id']} (fixed in {', '.join(v['fix_versions']) or 'no release yet'})\n")
    if result["skipped"]:
        sys.stdout.write(f"  skipped, e.g. {result['skipped'][0]['name']}: {result['skipped'][0]['reason']}\n")
    (PROJECT_ROOT / "var" / "audit-summary.json").write_text(json.dumps(result, indent=2))
    if audited == 0:
        sys.stdout.write("NOT AUDITED: no vulnerability service answered from this machine (see docs/reliability-and-security.md).\n")
        return 2
    return 1 if result["vulnerable"] else 0


if __name__ == "__main__":
    sys.exit(main())

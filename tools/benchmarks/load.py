"""`make bench`: open-loop load on the product (its defaults) and on a stock `rasa init` baseline.

Both run on this machine, in the same command, over the REST channel, with realistic
multi-turn conversations from the project's own cases, each simulated patient sending its
messages in order. Messages arrive at a fixed rate whether or not earlier ones were answered
(as Telegram delivers them) at each offered rate; plus one single-patient closed-loop run.

Per system it reports, for each rate, p50/p95/p99 latency, achieved throughput and errors; the
capacity (highest rate with p95 ≤ 200 ms and no errors: the grid's best rate, then bisected
against the next grid rate until the two are within 15 %, each probe a run of its own);
cold start (process start → first
answer); training time; peak RSS of the Rasa and action servers; and a PNG chart of p95
against offered rate. JSON in var/bench/load.json.

The baseline is the same training data (domain, NLU, stories, rules, actions) trained with
the `config.yml` that `rasa init` writes (empty pipeline and policies: Rasa's defaults, with
TED and ResponseSelector), served with Rasa's default in-memory tracker store.
"""

from __future__ import annotations

import asyncio
import json
import platform
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import rasa

from bot import PROJECT_ROOT
from bot.servers import RASA, Stack, child_env, isolated_settings, rasa_command, wait_until_up
from bot.settings import MODEL_PATH, Settings
from tools.evaluate import patient_conversations, percentile

RATES = (10, 30, 60, 100, 150)
SECONDS_PER_RATE = 20
CAPACITY_P95_MS = 200.0
PER_PATIENT = 5
TIMEOUT_S = 10.0


def _pct(values: list[float], q: float) -> float:
    return round(percentile(values, q), 1) if values else float("nan")


async def open_loop(url: str, rate: float, seconds: float, tag: str) -> dict[str, Any]:
    """Offer `rate` msg/s for `seconds`; patients interleave, each one's messages in order."""
    total = int(rate * seconds)
    patients = patient_conversations(max(1, total // PER_PATIENT + 1), PER_PATIENT)
    plan = [(n / rate, n % len(patients), n // len(patients)) for n in range(total)]
    latencies: list[float] = []
    errors = 0
    finished: list[float] = []
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:

        async def send(at: float, patient: int, k: int, start: float) -> None:
            nonlocal errors
            await asyncio.sleep(max(0.0, start + at - time.monotonic()))
            t0 = time.monotonic()
            body = {"sender": f"load-{tag}-{patient}", "message": patients[patient][k % PER_PATIENT]}
            try:
                async with http.post(f"{url}/webhooks/rest/webhook", json=body) as response:
                    answer = await response.json(content_type=None)
                    ok = response.status == 200 and bool(answer)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                ok = False
            done = time.monotonic()
            if ok:
                latencies.append((done - t0) * 1000)
                finished.append(done)
            else:
                errors += 1

        start = time.monotonic()
        await asyncio.gather(*(send(at, p, k, start) for at, p, k in plan))
    span = (max(finished) - start) if finished else float("nan")
    return {
        "offered_msg_s": rate,
        "messages": total,
        "p50_ms": _pct(latencies, 0.50),
        "p95_ms": _pct(latencies, 0.95),
        "p99_ms": _pct(latencies, 0.99),
        "achieved_msg_s": round(len(latencies) / span, 1) if finished else 0.0,
        "errors": errors,
    }


async def single_patient(url: str, messages: int = 150, tag: str = "single") -> dict[str, Any]:
    """One patient, closed loop: the next message only after the answer (typing speed aside).
    `tag` names the conversations, so a warm-up run does not lengthen the measured ones."""
    conversation = [m for conv in patient_conversations(messages // PER_PATIENT + 1, PER_PATIENT) for m in conv][:messages]
    latencies = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)) as http:
        start = time.monotonic()
        for n, text in enumerate(conversation):
            t0 = time.monotonic()
            # a new conversation every 5 messages, like a patient coming back later
            async with http.post(f"{url}/webhooks/rest/webhook", json={"sender": f"{tag}-{n // PER_PATIENT}", "message": text}) as r:
                await r.read()
            latencies.append((time.monotonic() - t0) * 1000)
        seconds = time.monotonic() - start
    return {"messages": messages, "p50_ms": _pct(latencies, 0.5), "p95_ms": _pct(latencies, 0.95), "msg_s": round(messages / seconds, 1)}


async def drain(url: str, idle_ms: float, give_up_s: float = 180.0) -> None:
    """Wait until the server has worked off the backlog of an overloaded run: two answers in a
    row within `idle_ms` (otherwise the next run starts behind and looks slower than it is)."""
    deadline = time.monotonic() + give_up_s
    fast = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        while fast < 2 and time.monotonic() < deadline:
            t0 = time.monotonic()
            async with http.post(f"{url}/webhooks/rest/webhook", json={"sender": f"drain-{t0}", "message": "hello"}) as r:
                await r.read()
            fast = fast + 1 if (time.monotonic() - t0) * 1000 <= idle_ms else 0
            await asyncio.sleep(0.5)


def passes(run: dict[str, Any]) -> bool:
    return run["errors"] == 0 and run["p95_ms"] <= CAPACITY_P95_MS


def capacity_search(url: str, grid: list[dict[str, Any]], seconds: float, tag: str, idle_ms: float) -> tuple[float, list[dict[str, Any]]]:
    """Highest passing rate: bisect between the best passing grid rate and the next one up."""
    ok = [r["offered_msg_s"] for r in grid if passes(r)]
    lo = max(ok) if ok else 0.0
    above = [r["offered_msg_s"] for r in grid if r["offered_msg_s"] > lo and not passes(r)]
    if not above:
        return lo, []  # every rate passed: the capacity is at least the top of the grid
    hi = min(above)
    probes = []
    while (hi - lo) > 0.15 * hi and hi > 1:
        rate = round((lo + hi) / 2, 1) if lo else max(1.0, round(hi / 2, 1))
        asyncio.run(drain(url, idle_ms))
        run = asyncio.run(open_loop(url, rate, seconds, f"{tag}-probe-{rate}"))
        probes.append(run)
        lo, hi = (rate, hi) if passes(run) else (lo, rate)
    return lo, probes


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


@dataclass
class System:
    name: str
    model: Path
    endpoints: Path | None  # None: the product's endpoints.yml (SQL tracker store)
    training_s: float | None


def train(config: Path, out: Path, name: str) -> float:
    """Training time from an empty Rasa cache (a warm `.rasa/cache` made stock look 16× faster)."""
    env = child_env(isolated_settings(out))
    env["RASA_CACHE_DIRECTORY"] = str(out / f"cache-{name}")
    t0 = time.monotonic()
    subprocess.run(
        [RASA, "train", "--config", str(config), "--out", str(out), "--fixed-model-name", name, "--quiet"],
        cwd=PROJECT_ROOT, check=True, capture_output=True, env=env,
    )  # fmt: skip
    return round(time.monotonic() - t0, 1)


def stock_config(work: Path) -> Path:
    """The config.yml `rasa init` writes, taken from the installed Rasa (not a copy of ours)."""
    source = Path(rasa.__file__).parent / "cli" / "initial_project" / "config.yml"
    target = work / "stock-config.yml"
    shutil.copy(source, target)
    return target


def run_system(system: System, work: Path, rates: tuple[int, ...], seconds: float) -> dict[str, Any]:
    settings: Settings = isolated_settings(work / system.name)
    (work / system.name).mkdir(parents=True, exist_ok=True)
    stack = Stack(settings, log_dir=work / system.name)
    result: dict[str, Any] = {"system": system.name, "training_s": system.training_s}
    try:
        stack.start_actions()
        command = rasa_command(settings, model=system.model)
        if system.endpoints is not None:
            command[command.index("--endpoints") + 1] = str(system.endpoints)
        t0 = time.monotonic()
        proc = stack.spawn("rasa", command)
        wait_until_up(f"{settings.rasa_url}/", proc, 300, f"Rasa server ({system.name})")
        asyncio.run(single_patient(settings.rasa_url, messages=1, tag="cold"))
        result["cold_start_s"] = round(time.monotonic() - t0, 1)
        # warm up (caches of the normaliser, spaCy vocabulary, compiled SQL): a clinic server runs for days
        asyncio.run(single_patient(settings.rasa_url, messages=100, tag="warm"))
        result["single_patient"] = asyncio.run(single_patient(settings.rasa_url))
        result["rates"] = []
        idle_ms = max(100.0, 3 * result["single_patient"]["p95_ms"])
        for rate in rates:
            asyncio.run(drain(settings.rasa_url, idle_ms))
            result["rates"].append(asyncio.run(open_loop(settings.rasa_url, rate, seconds, f"{system.name}-{rate}")))
        result["capacity_msg_s"], result["capacity_probes"] = capacity_search(
            settings.rasa_url, result["rates"], seconds, system.name, idle_ms
        )
        result["peak_rss_mb"] = {"rasa": peak_rss_mb(stack.procs["rasa"].pid), "actions": peak_rss_mb(stack.procs["actions"].pid)}
    finally:
        stack.stop()
    return result


def chart(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for r in results:
        runs = sorted(r["rates"] + r.get("capacity_probes", []), key=lambda x: x["offered_msg_s"])
        line = ax.plot([x["offered_msg_s"] for x in runs], [x["p95_ms"] for x in runs], marker="o", label=r["system"])
        ax.axvline(r["capacity_msg_s"], color=line[0].get_color(), linestyle=":", linewidth=1)
    ax.axhline(CAPACITY_P95_MS, color="grey", linestyle="--", linewidth=1, label="capacity limit (p95 200 ms)")
    ax.set_xlabel("offered load (messages/s, open loop; dotted: capacity)")
    ax.set_ylabel("p95 latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"p95 latency vs offered rate — {platform.node()}, {time.strftime('%Y-%m-%d')}")
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main(rates: tuple[int, ...] = RATES, seconds: float = SECONDS_PER_RATE, baseline: bool = True) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="crs-bench-load-"))
    ours_training = train(PROJECT_ROOT / "config.yml", work / "models", "ours")
    systems = [System("ours", work / "models" / "ours.tar.gz", None, ours_training)]
    if baseline:
        stock_endpoints = work / "stock-endpoints.yml"
        stock_endpoints.write_text("action_endpoint:\n  url: http://localhost:${ACTIONS_PORT}/webhook\n")  # in-memory tracker store
        stock_training = train(stock_config(work), work / "models", "stock")
        systems.append(System("stock", work / "models" / "stock.tar.gz", stock_endpoints, stock_training))
    results = [run_system(s, work, rates, seconds) for s in systems]
    out_dir = PROJECT_ROOT / "var" / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    chart(results, out_dir / "load.png")
    report = {
        "machine": f"{platform.node()} {platform.machine()}, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "model_in_use": str(MODEL_PATH),
        "seconds_per_rate": seconds,
        "systems": results,
    }
    if len(results) == 2 and results[1]["capacity_msg_s"]:
        report["capacity_ratio"] = round(results[0]["capacity_msg_s"] / results[1]["capacity_msg_s"], 2)
    (out_dir / "load.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [f"load benchmark — {r['machine']}, {r['date']} ({r['seconds_per_rate']:g} s per rate, open loop)"]
    for s in r["systems"]:
        sp = s["single_patient"]
        lines.append(
            f"{s['system']}: training {s['training_s']} s, cold start {s['cold_start_s']} s, "
            f"peak RSS rasa {s['peak_rss_mb']['rasa']} MB / actions {s['peak_rss_mb']['actions']} MB, "
            f"single patient p50 {sp['p50_ms']} ms ({sp['msg_s']} msg/s), capacity {s['capacity_msg_s']} msg/s"
        )
        lines.append(f"  {'offered':>8} {'p50':>8} {'p95':>8} {'p99':>8} {'achieved':>9} {'errors':>7}")
        for x in s["rates"]:
            lines.append(
                f"  {x['offered_msg_s']:>8} {x['p50_ms']:>8} {x['p95_ms']:>8} {x['p99_ms']:>8} {x['achieved_msg_s']:>9} {x['errors']:>7}"
            )
        for x in s.get("capacity_probes", []):
            lines.append(f"  probe {x['offered_msg_s']:>5} msg/s: p95 {x['p95_ms']} ms, errors {x['errors']}")
    if "capacity_ratio" in r:
        lines.append(f"capacity ours / stock: {r['capacity_ratio']}×  (target ≥ 3×)")
    lines.append("chart: var/bench/load.png, JSON: var/bench/load.json")
    return "\n".join(lines)

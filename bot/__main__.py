"""`python -m bot …`: the operations CLI behind `make run` and `make eval`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bot.evaluate import RestClient, evaluate, format_summary
from bot.secret_masking import install_from_environment as install_secret_masking
from bot.servers import Stack, isolated_settings
from bot.settings import Settings, load_settings


def cmd_run(args: argparse.Namespace) -> int:
    """Every part under the supervisor (bot/supervisor.py): a part that dies is restarted, the
    others keep serving; only a crash loop ends `make run`, non-zero."""
    import logging

    from bot.model_check import ModelError, check_model
    from bot.settings import MODEL_PATH
    from bot.supervisor import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    try:
        check_model(MODEL_PATH)  # a missing or damaged model is not a crash to retry: say so and stop
    except (ModelError, FileNotFoundError) as exc:
        sys.stderr.write(f"start-up failed: {exc}\n")
        return 1
    t0 = time.monotonic()
    supervisor = Supervisor.for_stack(Stack(settings, log_dir=settings.log_dir, die_with_parent=True))

    def ready() -> None:
        sys.stdout.write(
            f"CRS symptom checker ready in {time.monotonic() - t0:.1f} s\n"
            f'  Rasa REST channel: POST {settings.rasa_url}/webhooks/rest/webhook  body {{"sender": "me", "message": "hi"}}\n'
            f"  Rasa HTTP API (token in var/rasa-api-token or $RASA_API_TOKEN): {settings.rasa_url}/status?token=…\n"
            f"  Action server: {settings.actions_url}/health\n"
            f"  Tracker store: {settings.database_url.split('@')[-1]}\n"
            f"  Telegram relay: {relay_status(settings)}\n"
            f"  Clinic review app: {settings.clinic_url}/  (create a login first: make user NAME=alice ROLE=admin)\n"
            f"  Status: make status, or http://127.0.0.1:{settings.status_port}/status (a part that dies is restarted)\n"
            '  Try: curl -s localhost:%d/webhooks/rest/webhook -d \'{"sender":"me","message":"I cant catch my breath"}\'\n'
            "  Ctrl-C stops everything.\n" % settings.rasa_port
        )
        sys.stdout.flush()

    return supervisor.run(settings.status_port, on_ready=ready)


def cmd_status(args: argparse.Namespace) -> int:
    """What `make run`'s supervisor reports: 0 healthy, 1 not, 3 not running."""
    import requests

    from bot.supervisor import format_status

    url = f"http://127.0.0.1:{load_settings().status_port}/status"
    try:
        status = requests.get(url, timeout=10).json()
    except requests.RequestException:
        sys.stdout.write(f"not running (nothing answers at {url}; start it with make run)\n")
        return 3
    sys.stdout.write(format_status(status) + "\n")
    return 0 if status["healthy"] else 1


def relay_status(settings: Settings) -> str:
    if not settings.telegram_bot_token:
        return "OFF: TELEGRAM_BOT_TOKEN is not set (set it, e.g. in .env, to serve patients on Telegram)"
    if settings.telegram_webhook_url:
        listen = f"{settings.telegram_webhook_listen}:{settings.telegram_webhook_port}"
        return f"on, webhook {settings.telegram_webhook_url} (listening on {listen})"
    return "on, long polling" + (f" via {settings.telegram_api_base_url}" if settings.telegram_api_base_url else "")


def cmd_relay(args: argparse.Namespace) -> int:
    from bot.telegram.app import run

    settings = load_settings()
    if not settings.telegram_bot_token:
        sys.stderr.write("TELEGRAM_BOT_TOKEN is not set: the Telegram relay cannot start.\n")
        return 2
    run(settings)
    return 0


def cmd_clinic(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.clinic.alerts import alert_config_of
    from bot.clinic.web import create_app
    from bot.db import create_db_engine

    settings = load_settings()
    alert_config = alert_config_of(settings)
    engine = create_db_engine(settings.database_url)
    app = create_app(
        engine, str(settings.clinic_secret_key), settings.clinic_https_only, alert_config=alert_config,
        fhir_identifier_system=settings.fhir_identifier_system, timezone=settings.clinic_timezone,
    )  # fmt: skip
    # uvicorn: the reference ASGI server for Starlette; loopback unless --host, put TLS in front. No
    # websockets (Rasa pins an old `websockets` that uvicorn cannot use, and the app needs none).
    # Behind a reverse proxy, --forwarded-allow-ips names it so login limits see client addresses.
    proxied = bool(args.forwarded_allow_ips)
    uvicorn.run(
        app, host=args.host, port=settings.clinic_port, log_level="warning", ws="none",
        proxy_headers=proxied, forwarded_allow_ips=args.forwarded_allow_ips or None,
    )  # fmt: skip
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    import getpass

    from bot.clinic import accounts
    from bot.clinic.schema import create_tables
    from bot.db import create_db_engine

    engine = create_db_engine(load_settings().database_url)
    create_tables(engine)
    try:
        if args.action == "add":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"Password for {args.name}: ")
            accounts.add_user(engine, args.name, password, args.role)
            sys.stdout.write(f"added {args.role} {args.name}\n")
        elif args.action == "passwd":
            password = sys.stdin.readline().rstrip("\n") if args.password_stdin else getpass.getpass(f"New password for {args.name}: ")
            accounts.set_password(engine, args.name, password)
            sys.stdout.write(f"password changed for {args.name}\n")
        elif args.action == "unlock":
            accounts.unlock(engine, args.name)
            sys.stdout.write(f"unlocked {args.name}\n")
        elif args.action in ("disable", "enable"):
            accounts.set_disabled(engine, args.name, args.action == "disable")
            sys.stdout.write(f"{args.action}d {args.name}" + (" and ended its sessions\n" if args.action == "disable" else "\n"))
        elif args.action == "logout":
            sys.stdout.write(f"ended {accounts.end_sessions(engine, args.name)} session(s) of {args.name}\n")
        else:
            for name, role, state in accounts.list_users(engine):
                sys.stdout.write("\t".join([name, role, state]).rstrip() + "\n")
        if args.action != "list":  # who changed which account from the command line, in the clinic's audit log
            accounts.audit(
                engine,
                f"cli:{getpass.getuser()}"[:80],
                f"user-{args.action}",
                args.name,
                f"role={args.role}" if args.action == "add" else "",
            )
    except accounts.AccountError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from bot.clinic.alerts import alert_config_of
    from bot.clinic.retention import apply_retention
    from bot.db import create_db_engine

    settings = load_settings()
    days = args.days if args.days is not None else settings.retention_days
    run = apply_retention(create_db_engine(settings.database_url), days, tracking=alert_config_of(settings).tracking)
    sys.stdout.write(
        f"retention {days:g} days: deleted {run.conversations} conversations ({run.events} events) last active before the cutoff\n"
    )
    return 0


def cmd_bench_relay(args: argparse.Namespace) -> int:
    from bot.benchmarks.relay import format_results, main

    results = main(chats=args.chats, per_chat=args.per_chat, rate=args.rate)
    sys.stdout.write(format_results(results) + "\n(JSON in var/bench/relay.json)\n")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from bot.audit import main

    return main()


def cmd_rasa(args: argparse.Namespace) -> int:
    """`rasa …` after checking the `--model` it names (the container entrypoint of the Rasa server).

    With `--enable-api` and no `--auth-token`, the token comes from $RASA_API_TOKEN and is given
    to Rasa inside this process: a command-line token would be readable by every local user."""
    import os

    from bot.model_check import ModelError, check_model

    rasa_args = [a for a in args.rasa_args if a != "--"]
    model = Path(rasa_args[rasa_args.index("--model") + 1]) if "--model" in rasa_args[:-1] else Path("models")
    if model.is_dir():  # Rasa serves the newest archive of a directory
        model = max(model.glob("*.tar.gz"), key=lambda p: p.stat().st_mtime, default=model / "crs.tar.gz")
    try:
        check_model(model)
    except ModelError as error:
        sys.stderr.write(f"refusing to start the Rasa server: {error}\n")
        return 2
    if "--enable-api" in rasa_args and "--auth-token" not in rasa_args:
        token = os.environ.get("RASA_API_TOKEN") or str(load_settings().rasa_api_token)
        rasa_args += ["--auth-token", token]
    from rasa.__main__ import main as rasa_main

    from bot import rasa_patches

    try:
        rasa_patches.install()
    except (ValueError, rasa_patches.RasaVersionError) as error:
        sys.stderr.write(f"refusing to start the Rasa server: {error}\n")
        return 2
    sys.argv = ["rasa", *rasa_args]
    rasa_main()
    return 0


def cmd_actions(args: argparse.Namespace) -> int:
    """`rasa run actions …` in a process whose output masks the configured secrets (the action
    server's only difference from calling `rasa run actions` directly)."""
    from rasa.__main__ import main as rasa_main

    sys.argv = ["rasa", "run", "actions", *[a for a in args.sdk_args if a != "--"]]
    rasa_main()
    return 0


def cmd_chaos(args: argparse.Namespace) -> int:
    from bot.benchmarks.chaos import FAULT_KINDS, main

    kinds = tuple(args.kinds.split(",")) if args.kinds else FAULT_KINDS
    result = main(args.minutes, args.rate, args.faults, args.seed, kinds, echo=lambda line: sys.stdout.write(line + "\n"))
    return 0 if result["ok"] else 1


def cmd_soak(args: argparse.Namespace) -> int:
    from bot.benchmarks.soak import format_result, main

    result = main(minutes=args.minutes, rate=args.rate, warmup_minutes=args.warmup, send_rate=args.send_rate)
    sys.stdout.write(format_result(result) + "\n(JSON and chart in var/bench/soak.json, soak.png)\n")
    return 0 if all(check["ok"] for check in result["checks"].values()) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from bot.benchmarks.load import RATES, format_report, main

    rates = tuple(int(r) for r in args.rates.split(",")) if args.rates else RATES
    report = main(rates=rates, seconds=args.seconds, baseline=not args.no_baseline)
    sys.stdout.write(format_report(report) + "\n")
    return 0


def cmd_bench_checkins(args: argparse.Namespace) -> int:
    from bot.benchmarks.checkins import format_result, main

    result = main(patients=args.patients, share=args.share)
    sys.stdout.write(format_result(result) + "\n(JSON in var/bench/checkins.json)\n")
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


def cmd_bench_clinic(args: argparse.Namespace) -> int:
    from bot.benchmarks.clinic import format_results, main

    results = main(conversations=args.conversations, events_per=args.events_per, requests_n=args.requests)
    sys.stdout.write(format_results(results) + "\n(JSON in var/bench/clinic.json)\n")
    return 0


CASE_KINDS = {
    "own": "tuned (written beside the patterns)",
    "blind": "blind (written before the changes it measures; docs/evaluation.md 'Blind scores' says which were read since)",
}


def cmd_eval(args: argparse.Namespace) -> int:
    """Cases run on a throw-away stack (its own SQLite file, no alert channel) unless `--url`
    points at a server on purpose; either way every conversation is tagged as test traffic."""
    import tempfile

    import requests

    settings = load_settings()
    summaries = []
    with tempfile.TemporaryDirectory(prefix="crs-eval-") as tmp:
        stack = Stack(isolated_settings(Path(tmp)), log_dir=Path(tmp))
        try:
            if args.url:
                client = RestClient(args.url.rstrip("/"), str(settings.rasa_api_token))
            else:
                sys.stderr.write("starting a throw-away stack for the evaluation (pass --url to use a running server)…\n")
                stack.start_actions()
                stack.start_rasa()
                client = RestClient(stack.settings.rasa_url, str(stack.settings.rasa_api_token))
            files = [Path(c) for c in args.cases if Path(c).exists() or len(args.cases) == 1]
            out = Path(args.out)
            for cases in files:
                # one case file: OUT as given; several: one results file per case file beside OUT
                target = out if len(files) == 1 else out.parent / f"{cases.stem}.jsonl"
                summaries.append((cases, target, evaluate(client, cases, target)))
        except requests.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else "?"
            sys.stderr.write(f"the server refused the evaluation (HTTP {status}); with --url, RASA_API_TOKEN must be that server's token\n")
            return 2
        finally:
            stack.stop()
    for cases, target, summary in summaries:
        kind = CASE_KINDS.get(cases.stem.split("-")[0], "sample")
        sys.stdout.write(f"== {cases} — {kind}; results in {target}\n{format_summary(summary)}\n")
        if args.show_misses:
            for miss in summary["triage_misses"]:
                sys.stdout.write(f"  miss {miss}\n")
    return 0


def cmd_nlu_heldout(args: argparse.Namespace) -> int:
    from bot.nlu_heldout import format_scores, run

    scores = run([Path(c) for c in args.config or ["config.yml"]])
    sys.stdout.write(format_scores(scores) + "\n")
    if args.show_errors:
        for s in scores:
            sys.stdout.write("".join(f"  {s.config}: {e}\n" for e in s.errors))
    return 0


def cmd_scale_test(args: argparse.Namespace) -> int:
    from bot.scale import format_report, main

    report = main(seconds=args.seconds, patients=args.patients)
    sys.stdout.write(format_report(report) + "\n")
    return 1 if report["interleaved"]["problems"] or report["interleaved"]["unanswered"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_help = "start and supervise every part: action server, Rasa, clinic app, and the Telegram relay when TELEGRAM_BOT_TOKEN is set"
    sub.add_parser("run", help=run_help).set_defaults(func=cmd_run)
    sub.add_parser("status", help="each part of a running `make run`: state, pid, restarts, uptime, port").set_defaults(func=cmd_status)
    sub.add_parser("relay", help="run the Telegram relay alone (needs TELEGRAM_BOT_TOKEN and a running Rasa server)").set_defaults(
        func=cmd_relay
    )
    cl = sub.add_parser("clinic", help="run the clinic review web app alone")
    cl.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    cl.add_argument("--forwarded-allow-ips", default="", help="reverse proxy addresses whose X-Forwarded-For is trusted")
    cl.set_defaults(func=cmd_clinic)
    us = sub.add_parser("users", help="clinic staff accounts: add, passwd, unlock, disable, enable, logout (end all sessions), list")
    us.add_argument("action", choices=["add", "passwd", "unlock", "disable", "enable", "logout", "list"])
    us.add_argument("name", nargs="?", default="")
    us.add_argument("--role", choices=["viewer", "admin"], default="viewer")
    us.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    us.set_defaults(func=cmd_users)
    rt = sub.add_parser("retention", help="delete conversations older than RETENTION_DAYS (and record the run)")
    rt.add_argument("--days", type=float, default=None, help="override RETENTION_DAYS")
    rt.set_defaults(func=cmd_retention)
    br = sub.add_parser("bench-relay", help="Telegram relay overhead, loss and order through a fake Bot API")
    br.add_argument("--chats", type=int, default=200)
    br.add_argument("--per-chat", type=int, default=5)
    br.add_argument("--rate", type=float, default=10.0, help="messages per second, open loop")
    br.set_defaults(func=cmd_bench_relay)
    sub.add_parser("audit", help="pip-audit of requirements/lock.txt (needs .venv-audit: `make audit`)").set_defaults(func=cmd_audit)
    ra = sub.add_parser("rasa", help="check the model named by --model, then run `rasa …` with the same arguments")
    ra.add_argument("rasa_args", nargs=argparse.REMAINDER)
    ra.set_defaults(func=cmd_rasa)
    ac = sub.add_parser("actions", help="run the action server (`rasa run actions …` with the same arguments)")
    ac.add_argument("sdk_args", nargs=argparse.REMAINDER)
    ac.set_defaults(func=cmd_actions)
    so = sub.add_parser("soak", help="30 msg/s for 30 min through the Telegram relay: loss, duplicates, latency drift, memory growth")
    so.add_argument("--minutes", type=float, default=30.0)
    so.add_argument("--rate", type=float, default=30.0, help="messages per second, open loop")
    so.add_argument("--warmup", type=float, default=5.0, help="minutes before latency and memory are compared")
    so.add_argument("--send-rate", type=float, help="the relay's TELEGRAM_SEND_RATE for the run, msg/s (default: soak.SEND_RATE)")
    so.set_defaults(func=cmd_soak)
    ch = sub.add_parser("chaos", help="patients write while parts are killed, frozen and starved at random: loss, order, 911")
    ch.add_argument("--minutes", type=float, default=10.0)
    ch.add_argument("--rate", type=float, default=20.0, help="messages per second, open loop")
    ch.add_argument("--faults", type=int, default=16, help="faults over the run (each kind once before any repeats)")
    ch.add_argument("--seed", type=int, default=13)
    ch.add_argument("--kinds", default="", help="comma-separated fault kinds to draw from (default: all)")
    ch.set_defaults(func=cmd_chaos)
    bl = sub.add_parser("bench", help="open-loop load on the product and on a stock `rasa init` baseline")
    bl.add_argument("--rates", default="", help="comma-separated msg/s (default 10,30,60,100,150)")
    bl.add_argument("--seconds", type=float, default=20.0, help="seconds per rate")
    bl.add_argument("--no-baseline", action="store_true", help="only the product (skips training the stock model)")
    bl.set_defaults(func=cmd_bench)
    sc = sub.add_parser("scale-test", help="2 Rasa replicas + 2 action servers on PostgreSQL + Redis: order, loss, throughput")
    sc.add_argument("--seconds", type=float, default=20.0, help="seconds per throughput run")
    sc.add_argument("--patients", type=int, default=16, help="closed-loop simulated patients")
    sc.set_defaults(func=cmd_scale_test)
    bk = sub.add_parser("bench-checkins", help="N enrolled patients' check-ins due at once: time to drain within the send budget")
    bk.add_argument("--patients", type=int, default=10_000)
    bk.add_argument("--share", type=float, default=None, help="share of TELEGRAM_SEND_RATE for check-ins (data/checkins.yml)")
    bk.set_defaults(func=cmd_bench_checkins)
    bc = sub.add_parser("bench-clinic", help="clinic app page and export times on a large generated store")
    bc.add_argument("--conversations", type=int, default=10_000)
    bc.add_argument("--events-per", type=int, default=20)
    bc.add_argument("--requests", type=int, default=300)
    bc.set_defaults(func=cmd_bench_clinic)
    ev = sub.add_parser("eval", help="score case files on a throw-away stack (same model, actions and rules as the live bot)")
    ev.add_argument("--cases", required=True, nargs="+", help="one or more case files, each scored apart")
    ev.add_argument("--url", help="score against this running Rasa server instead (its conversations are tagged as test traffic)")
    ev.add_argument("--out", required=True)
    ev.add_argument("--show-misses", action="store_true")
    ev.set_defaults(func=cmd_eval)
    ho = sub.add_parser("nlu-heldout", help="intent scores on a held-out split, one column per config")
    ho.add_argument("--config", action="append", help="a Rasa config file (repeatable); default config.yml")
    ho.add_argument("--show-errors", action="store_true")
    ho.set_defaults(func=cmd_nlu_heldout)
    args, extra = parser.parse_known_args(argv)
    if args.command == "actions":  # rasa_sdk's own options (--actions, --port) pass through
        args.sdk_args = [*extra, *args.sdk_args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    install_secret_masking()  # before any command runs: third-party messages and tracebacks too
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

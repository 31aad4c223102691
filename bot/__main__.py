"""`python -m bot …`: the operations CLI behind `make run`, the containers and the clinic's accounts
(developer commands: `python -m tools`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bot.secret_masking import install_from_environment as install_secret_masking
from bot.servers import Stack
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
            f"  Clinic worker (summaries, worklist, alerts): {settings.clinic_worker_url}/health\n"
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
    from bot.clinic.app import create_app
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


def cmd_clinic_worker(args: argparse.Namespace) -> int:
    """The clinic's background work (bot/clinic/worker.py) until SIGTERM or Ctrl-C."""
    import asyncio
    import logging
    import signal

    from bot.clinic.alerts import alert_config_of
    from bot.clinic.worker import ClinicWorker, serve
    from bot.db import create_db_engine

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = load_settings()
    worker = ClinicWorker(create_db_engine(settings.database_url), alert_config_of(settings), interval=args.interval)

    async def main() -> None:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await serve(worker, args.host, settings.clinic_worker_port, stop)

    asyncio.run(main())
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    run_help = (
        "start and supervise every part: action server, Rasa, clinic app and worker, and the Telegram relay when TELEGRAM_BOT_TOKEN is set"
    )
    sub.add_parser("run", help=run_help).set_defaults(func=cmd_run)
    sub.add_parser("status", help="each part of a running `make run`: state, pid, restarts, uptime, port").set_defaults(func=cmd_status)
    sub.add_parser("relay", help="run the Telegram relay alone (needs TELEGRAM_BOT_TOKEN and a running Rasa server)").set_defaults(
        func=cmd_relay
    )
    cl = sub.add_parser("clinic", help="run the clinic review web app alone")
    cl.add_argument("--host", default="127.0.0.1", help="interface to listen on (default loopback only)")
    cl.add_argument("--forwarded-allow-ips", default="", help="reverse proxy addresses whose X-Forwarded-For is trusted")
    cl.set_defaults(func=cmd_clinic)
    cw = sub.add_parser("clinic-worker", help="run the clinic's background work: summaries, worklist escalation, alerts")
    cw.add_argument("--host", default="127.0.0.1", help="interface for /health (default loopback only)")
    cw.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    cw.set_defaults(func=cmd_clinic_worker)
    us = sub.add_parser("users", help="clinic staff accounts: add, passwd, unlock, disable, enable, logout (end all sessions), list")
    us.add_argument("action", choices=["add", "passwd", "unlock", "disable", "enable", "logout", "list"])
    us.add_argument("name", nargs="?", default="")
    us.add_argument("--role", choices=["viewer", "admin"], default="viewer")
    us.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    us.set_defaults(func=cmd_users)
    rt = sub.add_parser("retention", help="delete conversations older than RETENTION_DAYS (and record the run)")
    rt.add_argument("--days", type=float, default=None, help="override RETENTION_DAYS")
    rt.set_defaults(func=cmd_retention)
    ra = sub.add_parser("rasa", help="check the model named by --model, then run `rasa …` with the same arguments")
    ra.add_argument("rasa_args", nargs=argparse.REMAINDER)
    ra.set_defaults(func=cmd_rasa)
    ac = sub.add_parser("actions", help="run the action server (`rasa run actions …` with the same arguments)")
    ac.add_argument("sdk_args", nargs=argparse.REMAINDER)
    ac.set_defaults(func=cmd_actions)
    args, extra = parser.parse_known_args(argv)
    if args.command == "actions":  # rasa_sdk's own options (--actions, --port) pass through
        args.sdk_args = [*extra, *args.sdk_args]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    install_secret_masking()  # before any command runs: third-party messages and tracebacks too
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

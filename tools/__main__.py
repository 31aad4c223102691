"""`python -m tools …`: the developer commands behind `make eval`, the benchmarks, soak, chaos,
the scale test, the NLU held-out split and the dependency audit. Not part of the product:
nothing in bot/ or actions/ imports tools/, and the image does not contain it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bot.secret_masking import install_from_environment as install_secret_masking
from bot.servers import Stack, isolated_settings
from bot.settings import load_settings
from tools.evaluate import RestClient, evaluate, format_summary


def cmd_bench_relay(args: argparse.Namespace) -> int:
    from tools.benchmarks.relay import format_results, main

    results = main(chats=args.chats, per_chat=args.per_chat, rate=args.rate)
    sys.stdout.write(format_results(results) + "\n(JSON in var/bench/relay.json)\n")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from tools.audit import main

    return main()


def cmd_chaos(args: argparse.Namespace) -> int:
    from tools.benchmarks.chaos import FAULT_KINDS, main

    kinds = tuple(args.kinds.split(",")) if args.kinds else FAULT_KINDS
    result = main(args.minutes, args.rate, args.faults, args.seed, kinds, echo=lambda line: sys.stdout.write(line + "\n"))
    return 0 if result["ok"] else 1


def cmd_soak(args: argparse.Namespace) -> int:
    from tools.benchmarks.soak import format_result, main

    result = main(minutes=args.minutes, rate=args.rate, warmup_minutes=args.warmup, send_rate=args.send_rate)
    sys.stdout.write(format_result(result) + "\n(JSON and chart in var/bench/soak.json, soak.png)\n")
    return 0 if all(check["ok"] for check in result["checks"].values()) else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from tools.benchmarks.load import RATES, format_report, main

    rates = tuple(int(r) for r in args.rates.split(",")) if args.rates else RATES
    report = main(rates=rates, seconds=args.seconds, baseline=not args.no_baseline)
    sys.stdout.write(format_report(report) + "\n")
    return 0


def cmd_bench_checkins(args: argparse.Namespace) -> int:
    from tools.benchmarks.checkins import format_result, main

    result = main(patients=args.patients, share=args.share)
    sys.stdout.write(format_result(result) + "\n(JSON in var/bench/checkins.json)\n")
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 else 1


def cmd_bench_clinic(args: argparse.Namespace) -> int:
    from tools.benchmarks.clinic import format_results, main

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
    from tools.nlu_heldout import format_scores, run

    scores = run([Path(c) for c in args.config or ["config.yml"]])
    sys.stdout.write(format_scores(scores) + "\n")
    if args.show_errors:
        for s in scores:
            sys.stdout.write("".join(f"  {s.config}: {e}\n" for e in s.errors))
    return 0


def cmd_scale_test(args: argparse.Namespace) -> int:
    from tools.scale import format_report, main

    report = main(seconds=args.seconds, patients=args.patients)
    sys.stdout.write(format_report(report) + "\n")
    return 1 if report["interleaved"]["problems"] or report["interleaved"]["unanswered"] else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    br = sub.add_parser("bench-relay", help="Telegram relay overhead, loss and order through a fake Bot API")
    br.add_argument("--chats", type=int, default=200)
    br.add_argument("--per-chat", type=int, default=5)
    br.add_argument("--rate", type=float, default=10.0, help="messages per second, open loop")
    br.set_defaults(func=cmd_bench_relay)
    sub.add_parser("audit", help="pip-audit of requirements/lock.txt (needs .venv-audit: `make audit`)").set_defaults(func=cmd_audit)
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
    args = parser.parse_args(argv)
    install_secret_masking()
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())

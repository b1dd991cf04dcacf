"""`python -m bench [--quick]`: measure every wait strategy against the fake upstream and report.

Writes bench/out/results.json and bench/out/report.md (and the plot); a full run
also refreshes the results section of docs/benchmarks.md and docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench import config, machine, phases, plot, report, snapshot
from bench.deployment import Deployment

OUT = Path(__file__).resolve().parent / "out"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _names(text: str, allowed) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown: {', '.join(unknown)} (choose from {', '.join(allowed)})")
    return names


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        epilog="The scale-out row (instances behind nginx on PostgreSQL and Redis): python -m bench.scale_out --help",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: 5-7 minutes in all (docs/benchmarks.md)")
    parser.add_argument(
        "--strategies",
        default=",".join(config.STRATEGIES),
        type=lambda t: _names(t, config.STRATEGIES),
        help="wait strategies to measure, in order",
    )
    parser.add_argument(
        "--workers",
        default=None,
        type=lambda t: _names(t, config.WORKERS),
        help="how the backend is served: shipped (gunicorn.conf.py as it is, the default), gthread, gevent",
    )
    parser.add_argument(
        "--variants",
        default=None,
        type=lambda t: tuple(_names(t, config.WIDTH_VARIANTS)),
        help="width variants: prepared (threads made before the step), full (the whole flow inside it)",
    )
    parser.add_argument(
        "--phases", default="lag,overhead,width", type=lambda t: _names(t, ("lag", "overhead", "width"))
    )
    parser.add_argument(
        "--width-steps",
        default=None,
        type=lambda t: tuple(int(n) for n in t.split(",")),
        help="override the N of the width steps, e.g. 100,500",
    )
    parser.add_argument(
        "--client",
        default="blocking",
        choices=config.CLIENTS,
        help='how runs are asked for: blocking (the JSON answer, the default) or stream ("stream": true, events)',
    )
    parser.add_argument("--backend-workers", type=int, default=None, help="gunicorn workers (default 1)")
    parser.add_argument("--threads", type=int, default=None, help="gthread threads of the backend's worker")
    parser.add_argument(
        "--fake-server",
        default="gevent",
        choices=("werkzeug", "gthread", "gevent"),
        help="how the fake upstream is served, one process in every case (werkzeug: no keep-alive)",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra backend environment, e.g. POLL_MAX_MS=500 (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--from-results",
        type=Path,
        default=None,
        metavar="RESULTS_JSON",
        help="measure nothing: write the report (and publish) from an earlier results.json",
    )
    parser.add_argument("--no-publish", action="store_true", help="leave docs/ alone even in a full run")
    return parser.parse_args(argv)


def build_plan(args: argparse.Namespace) -> config.Plan:
    plan = config.QUICK if args.quick else config.FULL
    changes = {}
    if args.client != "blocking":
        changes["client"] = args.client
    if args.width_steps:
        changes["width_steps"] = args.width_steps
    if args.variants:
        changes["width_variants"] = args.variants
    if args.backend_workers:
        changes["backend_workers"] = args.backend_workers
    if args.threads:
        changes["threads"] = args.threads
        changes["worker_connections"] = max(plan.worker_connections, 2 * args.threads)
    if args.env:
        changes["extra_env"] = dict(pair.split("=", 1) for pair in args.env)
    return dataclasses.replace(plan, **changes)


def measure(strategy: str, worker: str, plan: config.Plan, args: argparse.Namespace, code: Path, log) -> dict:
    """Every asked phase for one strategy under one worker class, on its own deployment."""
    result: dict = {"strategy": strategy, "worker": worker, "client": plan.client}
    log_dir = args.out / "logs" / f"{worker}-{strategy}"
    with Deployment(strategy, worker, plan, log_dir, args.fake_server, code) as dep:
        if "lag" in args.phases:
            started = time.monotonic()
            result["lag"] = phases.lag_and_calls(dep, args.out / "records")
            lag, calls = result["lag"]["lag_ms"], result["lag"]["calls"]
            log(
                f"    lag p50/p95/p99/max {lag.get('p50')}/{lag.get('p95')}/{lag.get('p99')}/{lag.get('max')} ms, "
                f"{result['lag']['succeeded']}/{result['lag']['runs']} ok, {calls['run_calls_per_run']} calls/run "
                f"({calls['run_calls_per_run_second']}/run-s), {time.monotonic() - started:.0f}s"
            )
        if "overhead" in args.phases:
            result["overhead"] = phases.pass_through(dep)
            log(f"    pass-through p50 +{result['overhead']['p50_difference_ms']} ms")
        if "width" in args.phases:
            for variant in plan.width_variants:
                key = "width" if variant == "prepared" else f"width_{variant}"
                result[key] = phases.width(dep, args.out / "records", plan.width_steps, log, variant)
    return result


def write_report(results: dict, args: argparse.Namespace, log) -> None:
    """report.md and the plot under --out; in a full run, the results section of docs/ too."""
    table = report.markdown(results)
    (args.out / "report.md").write_text(table)
    print(table)
    plot.plot(results, args.out / "benchmarks.png")
    # The published section is the JSON answers'; streamed answers have their own, written by hand.
    if results["mode"] == "full" and not args.no_publish and results["plan"].get("client", "blocking") == "blocking":
        report.publish(results, table, args.out / "benchmarks.png", DOCS)
        log("docs/benchmarks.md and docs/benchmarks.png updated")


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.from_results:
        args.out.mkdir(parents=True, exist_ok=True)
        write_report(json.loads(args.from_results.read_text()), args, print)
        return
    workers = args.workers or ["shipped"]
    plan = build_plan(args)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    def log(line: str) -> None:
        print(f"[{time.monotonic() - started:6.0f}s] {line}", flush=True)

    code = Path(tempfile.mkdtemp(prefix="bench-code-"))
    results = {
        "code": snapshot.take(code),
        "mode": "quick" if args.quick else "full",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine.describe(),
        "plan": dataclasses.asdict(plan),
        "fake_server": args.fake_server,
        "measured": [],
    }
    log(f"code under test: {results['code']['commit']} + {len(results['code']['uncommitted'])} uncommitted paths")
    accepted = snapshot.wait_strategies(code)
    strategies = [s for s in args.strategies if accepted is None or config.STRATEGIES[s]["WAIT_STRATEGY"] in accepted]
    results["skipped_strategies"] = [s for s in args.strategies if s not in strategies]
    if results["skipped_strategies"]:
        log(f"not accepted by the code under test, skipped: {', '.join(results['skipped_strategies'])}")
    try:
        for worker in workers:
            for strategy in strategies:
                log(f"{worker} / {strategy}")
                results["measured"].append(measure(strategy, worker, plan, args, code, log))
                (args.out / "results.json").write_text(json.dumps(results, indent=1))
    finally:
        shutil.rmtree(code, ignore_errors=True)
    results["wall_s"] = round(time.monotonic() - started)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    write_report(results, args, log)
    log(f"done; results in {args.out}")


if __name__ == "__main__":
    main()

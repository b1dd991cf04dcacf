"""The scale-out row: `python -m bench.scale_out [--instances 1,2] [--width 200] [--client stream]`.

Starts on this one machine what docs/deploying.md ("Several instances") describes: instances
of the backend (gunicorn as shipped, each its own workers) behind nginx's `upstream` block,
sharing one PostgreSQL and one Redis (rate limits and the event log of streamed runs), in
front of the fake upstream. For each instance count it prepares `width` threads, starts all
their runs at once through nginx, and reports how many succeeded and the lag (the client has
the answer, minus the instant the upstream ended the run). With one instance the row shows
what the shared stores cost next to the SQLite rows of docs/benchmarks.md; with two, what
spreading the runs over two instances on the same two cores costs or gains.
Writes bench/out/scale_out.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import config, procs
from bench.fake import FakeControl
from bench.stats import summary_ms
from harness.servers import PostgresServer, start_gunicorn, start_nginx, start_redis

OUT = Path(__file__).resolve().parent / "out"
RUN_TIMEOUT_S = 60


def _load(port: int, runs: list[dict], tokens: list[str], stream: bool, work: Path, name: str, prepare: bool):
    spec = {
        "host": "127.0.0.1",
        "port": port,
        "prefix": "/api/openai",
        "runs": runs,
        "concurrency": len(runs) if not prepare else 50,
        "timeout": RUN_TIMEOUT_S + 30,
        "tokens": tokens,
        "stream": stream,
    }
    spec_path, out_path = work / f"{name}.spec.json", work / f"{name}.out.json"
    spec_path.write_text(json.dumps(spec))
    args = [sys.executable, "-m", "bench.load", *(["--prepare"] if prepare else []), str(spec_path), str(out_path)]
    subprocess.run(args, cwd=procs.ROOT, check=True)
    return json.loads(out_path.read_text())


def measure(instances: int, width: int, duration: float, stream: bool, work: Path) -> dict:
    """One row: `width` runs of `duration` s at once through nginx over `instances` instances."""
    work.mkdir(parents=True, exist_ok=True)
    children, postgres = [], PostgresServer()
    fake_port = procs.free_port()
    try:
        children.append(procs.start_fake(fake_port, "gevent", work))
        postgres.start()
        redis, redis_url = start_redis(work)
        children.append(redis)
        extra = {"RATELIMIT_STORAGE_URI": redis_url, "FORWARDED_PROXIES": "1"}
        env = procs.backend_env(fake_port, postgres.new_database(), config.STRATEGIES["poll"], extra)

        def start(i: int):
            own = work / f"instance{i}"
            (own / "metrics").mkdir(parents=True, exist_ok=True)
            return start_gunicorn(own, {**env, "PROMETHEUS_MULTIPROC_DIR": str(own / "metrics")}, name="backend")

        with ThreadPoolExecutor(instances) as pool:
            started = list(pool.map(start, range(instances)))
        children += [child for child, _ in started]
        (work / "nginx").mkdir(exist_ok=True)
        nginx, port = start_nginx(work / "nginx", [p for _, p in started], RUN_TIMEOUT_S)
        children.append(nginx)

        tokens = list(procs.bench_tokens(config.USERS).values())
        runs = [{"duration": duration} for _ in range(width)]
        for run, thread_id in zip(runs, _load(port, runs, tokens, False, work, "prepare", True), strict=True):
            run["thread_id"] = thread_id
        started_at = time.monotonic()
        records = _load(port, runs, tokens, stream, work, "load", False)["records"]
        wall = time.monotonic() - started_at
        control = FakeControl(fake_port)
        try:
            lags = []
            for record in records:
                if record.get("ok") and record.get("run_id"):
                    final_at = control.run_info(record["run_id"])["final_at"]
                    if final_at is not None:
                        lags.append(record["done"] - final_at)
        finally:
            control.close()
        ok = sum(1 for r in records if r.get("ok"))
        errors = sorted({r.get("error", "") for r in records if not r.get("ok")})[:5]
        return {
            "instances": instances,
            "width": width,
            "ok": ok,
            "wall_s": round(wall, 2),
            "lag": summary_ms(lags),
            "client": "stream" if stream else "blocking",
            "errors": errors,
        }
    finally:
        for child in reversed(children):
            child.stop()
        postgres.stop()


def table(rows: list[dict]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| instances | client | runs at once | succeeded | lag p50 ms | lag p99 ms | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lag = r["lag"]
        lines.append(
            f"| {r['instances']} | {r['client']} | {r['width']} | {r['ok']} | {lag.get('p50')} | {lag.get('p99')} "
            f"| {r['wall_s']} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    """Measure each instance count and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.scale_out", description=__doc__.splitlines()[0])
    parser.add_argument("--instances", default="1,2", type=lambda t: [int(n) for n in t.split(",")])
    parser.add_argument("--width", type=int, default=200, help="runs started at once (nginx takes 512 connections)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds each fake run lasts")
    parser.add_argument("--client", choices=config.CLIENTS, default="blocking")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-out-") as tmp:
        for n in args.instances:
            rows.append(measure(n, args.width, args.duration, args.client == "stream", Path(tmp) / f"n{n}"))
    OUT.mkdir(exist_ok=True)
    (OUT / "scale_out.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    for r in rows:
        if r["errors"]:
            print(f"{r['instances']} instance(s), failures: {r['errors']}")


if __name__ == "__main__":
    main()

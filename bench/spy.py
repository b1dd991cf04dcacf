"""`python -m bench.spy`: py-spy samples of the shipped backend's gunicorn workers under a width load.

The deployment of the benchmark (bench/deployment.py: gunicorn -c gunicorn.conf.py,
token auth, limits on, a fresh SQLite database) takes N polled runs of 10-11 s
launched over 5 s, threads made before; py-spy (requirements-dev.txt) samples each
worker through the load (18 s: the launch and the waits) and writes one raw
collapsed-stack file per worker to --out, then prints the share of samples by area.

    python -m bench.spy --runs 1000 --out bench/out/spy
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

from bench import config, phases, procs
from bench.deployment import Deployment

AREAS = (
    ("sqlalchemy", "SQLAlchemy"),
    ("sqlite3", "sqlite3"),
    ("httpx2", "httpx2 / httpcore2 / h11 (streams)"),
    ("httpcore2", "httpx2 / httpcore2 / h11 (streams)"),
    ("h11", "httpx2 / httpcore2 / h11 (streams)"),
    ("app/engines/http1.py", "the lean HTTP/1.1 client"),
    ("gunicorn", "gunicorn (HTTP parsing, the worker)"),
    ("gevent", "gevent (hub, sockets)"),
    ("werkzeug", "Flask and werkzeug"),
    ("flask", "Flask and werkzeug"),
    ("prometheus_client", "prometheus_client"),
    ("logging", "logging"),
    ("json", "json"),
    ("/app/", "the backend's own code"),
)


def _area(frame: str) -> str | None:
    for needle, name in AREAS:
        if needle in frame:
            return name
    return None


def shares(collapsed: Path) -> tuple[int, int, dict[str, float]]:
    """(samples, busy samples, share of the busy ones per area): a sample whose innermost frame is
    the gevent hub's loop is the worker waiting for I/O (idle); a busy one goes to the innermost
    frame of a known area."""
    counts: dict[str, float] = defaultdict(float)
    total = busy = 0
    for line in collapsed.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")
        total += int(n)
        if frames[-1].startswith("run (gevent/hub.py"):
            continue
        busy += int(n)
        area = next((a for a in map(_area, reversed(frames)) if a), "other (stdlib, C)")
        counts[area] += int(n)
    return total, busy, {k: v / max(busy, 1) for k, v in sorted(counts.items(), key=lambda kv: -kv[1])}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spy", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--strategy", default="poll", choices=sorted(config.STRATEGIES))
    parser.add_argument("--out", type=Path, default=procs.ROOT / "bench" / "out" / "spy")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    plan = replace(config.FULL, width_steps=(args.runs,))
    spy = Path(sys.executable).with_name("py-spy")
    with (
        tempfile.TemporaryDirectory() as work,
        Deployment(args.strategy, "shipped", plan, args.out, "gevent", procs.ROOT) as dep,
    ):
        original = phases._load
        recorders: list[tuple[subprocess.Popen, Path]] = []

        def spied_load(*load_args, **load_kwargs):  # the step's load, its workers sampled throughout
            for pid in procs.tree(dep.backend.pid)[1:]:
                raw = args.out / f"worker-{pid}.collapsed"
                command = [spy, "record", "--pid", str(pid), "--rate", "100", "--duration", "18", "--nonblocking"]
                recorders.append((subprocess.Popen([*command, "--format", "raw", "-o", raw]), raw))
            return original(*load_args, **load_kwargs)

        phases._load = spied_load
        step = phases.width_step(dep, args.runs, Path(work))
        for recorder, _ in recorders:
            recorder.wait()
    print(f"{args.runs} {args.strategy} runs: {step['succeeded']} ok; ms/run {step['cpu']['ms_per_run']}")
    for _, raw in recorders:
        total, busy, by_area = shares(raw)
        print(f"{raw.name}: {total} samples, {busy} busy (the rest: the hub waiting for I/O); the busy ones:")
        for area, share in by_area.items():
            print(f"  {100 * share:5.1f}%  {area}")


if __name__ == "__main__":
    main()

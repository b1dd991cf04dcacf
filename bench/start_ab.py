"""`python -m bench.start_ab --against DIR`: a run's start, this tree's backend against another tree's, in turns.

This machine's CPU per run drifts by 5-15% over minutes (other guests of the host), more
than most single changes move it; measured minutes apart, as bench.start_cost does, two
trees' figures cannot tell such a change. Here both backends run at once (each the shipped
gunicorn.conf.py of its own tree, on its own SQLite file, the same fake upstream, the same
environment as bench.start_cost's `backend`), and their rounds alternate, A B B A A B ...,
so that each round of one has a round of the other beside it. Printed: each one's median,
and the median of the paired differences (this tree less the other) with their spread.

    git worktree add /tmp/before HEAD~1
    python -m bench.start_ab --against /tmp/before --rounds 12
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.start_cost import _backend_threads, _one_run
from harness.servers import start_gunicorn, tree


def _start(work: Path, fake_port: int, code: Path, name: str, count: int):
    env = procs.backend_env(fake_port, f"sqlite:///{work / (name + '.db')}", {"WAIT_STRATEGY": "poll"}, {})
    env["POLL_FIRST_MS"] = "1"
    procs.migrate(env, code)
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    child, port = start_gunicorn(work, env, command=command, cwd=code, name=name)
    tokens = list(procs.bench_tokens(50).values())
    return child, port, tokens, _backend_threads(port, tokens, count)


def _round(child, port: int, tokens: list[str], threads: list[str]) -> float:
    """ms of the backend's CPU per run over these runs."""
    pids = tree(child.pid)
    before = procs.cpu_seconds(pids)
    for i, thread in enumerate(threads):
        _one_run(port, thread, {"assistant_type": "bench"}, tokens[i % len(tokens)])
    return (procs.cpu_seconds(pids) - before) / len(threads) * 1000


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.start_ab", description=__doc__)
    parser.add_argument("--against", type=Path, required=True, help="the other tree (e.g. a git worktree)")
    parser.add_argument("--runs", type=int, default=300, help="runs per round")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of each (after one unmeasured)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    fake_port = procs.free_port()
    fake = procs.start_fake(fake_port, "gevent", work)
    count = args.runs * (args.rounds + 1)
    subjects = {}
    try:
        for name, code in (("this", procs.ROOT), ("other", args.against.resolve())):
            subjects[name] = _start(work, fake_port, code, name, count)
        spent: dict[str, list[float]] = {"this": [], "other": []}
        for r in range(args.rounds + 1):
            order = ("this", "other") if r % 2 == 0 else ("other", "this")
            for name in order:
                child, port, tokens, threads = subjects[name]
                figure = _round(child, port, tokens, threads[r * args.runs : (r + 1) * args.runs])
                if r:  # the first round warms up
                    spent[name].append(figure)
                time.sleep(0.2)
    finally:
        for child, *_ in subjects.values():
            child.stop()
        fake.stop()
    differences = [a - b for a, b in zip(spent["this"], spent["other"], strict=True)]
    for name, code in (("this", procs.ROOT), ("other", args.against)):
        rounds = ", ".join(f"{x:.2f}" for x in spent[name])
        print(f"{name} ({code}): median {statistics.median(spent[name]):.3f} ms per run; rounds {rounds}")
    low, high = min(differences), max(differences)
    print(
        f"this - other: median {statistics.median(differences):+.3f} ms per run "
        f"({len([d for d in differences if d < 0])} of {len(differences)} rounds lower; range {low:+.2f} to {high:+.2f})"
    )


if __name__ == "__main__":
    main()

"""`python -m bench.start_ab --against DIR`: a run's start, this tree's backend against another tree's, in turns.

This machine's CPU per run drifts by 5-25% over minutes (other guests of the host), more
than most single changes move it; measured minutes apart, as bench.start_cost does, two
trees' figures cannot tell such a change. Here both backends run at once (each the shipped
gunicorn.conf.py of its own tree, on its own SQLite file, the same fake upstream, the same
environment as bench.start_cost's `backend`), and their rounds alternate, A B B A A B ...,
so that each round of one has a round of the other beside it. In single passes, the
backend started second has measured up to 0.17 ms a run cheaper than the first, whichever
tree it was (two trees without a change on a run's path): so there are two passes, the
second with fresh backends started in the other order, and the figure is the mean of the
two passes' median differences (this tree less the other), which cancels the order's share.

    git worktree add /tmp/before HEAD~1
    python -m bench.start_ab --against /tmp/before
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.start_cost import one_run, start_backend
from harness.servers import tree


def _round(child, port: int, tokens: list[str], threads: list[str]) -> float:
    """ms of the backend's CPU per run over these runs."""
    pids = tree(child.pid)
    before = procs.cpu_seconds(pids)
    for i, thread in enumerate(threads):
        one_run(port, thread, {"assistant_type": "bench"}, tokens[i % len(tokens)])
    return (procs.cpu_seconds(pids) - before) / len(threads) * 1000


def _pass(args, first: str, count: int) -> dict[str, list[float]]:
    """One pass: fresh backends (`first` started first) against a fresh fake, rounds in turns."""
    codes = {"this": procs.ROOT, "other": args.against.resolve()}
    work = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    fake_port = procs.free_port()
    fake = procs.start_fake(fake_port, "gevent", work)
    subjects = {}
    spent: dict[str, list[float]] = {"this": [], "other": []}
    try:
        for name in (first, "other" if first == "this" else "this"):
            subjects[name] = start_backend(work, fake_port, codes[name], name, count)
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
    return spent


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.start_ab", description=__doc__)
    parser.add_argument("--against", type=Path, required=True, help="the other tree (e.g. a git worktree)")
    parser.add_argument("--runs", type=int, default=300, help="runs per round")
    parser.add_argument("--rounds", type=int, default=8, help="rounds of each per pass (after one unmeasured)")
    args = parser.parse_args(argv)
    count = args.runs * (args.rounds + 1)
    medians = []
    for first in ("this", "other"):
        spent = _pass(args, first, count)
        differences = [a - b for a, b in zip(spent["this"], spent["other"], strict=True)]
        medians.append(statistics.median(differences))
        print(f"pass with {first} started first:")
        for name in ("this", "other"):
            rounds = ", ".join(f"{x:.2f}" for x in spent[name])
            print(f"  {name}: median {statistics.median(spent[name]):.3f} ms per run; rounds {rounds}")
        lower = len([d for d in differences if d < 0])
        print(f"  this - other: median {medians[-1]:+.3f} ms ({lower} of {len(differences)} rounds lower)")
    print(
        f"this - other, both orders: {statistics.mean(medians):+.3f} ms per run "
        f"(the order's own share: {abs(medians[0] - medians[1]) / 2:.3f} ms)"
    )


if __name__ == "__main__":
    main()

"""`python -m bench.turns`: the CPU of a run at width, the seed's and this backend's, step by step in turns.

`bench.seed` and `python -m bench` one after the other measure each backend over some
minutes, and this machine's CPU per run drifts by 10-40% over that long (other guests of
the host: the seed's own figure at 4,000 was 2.96 ms one session and 4.13 the next).
Here each width step is measured for the seed and for this backend back to back, and the
rounds alternate who goes first (seed, ours; then ours, seed), so that each ratio compares
two steps minutes apart at most. Each step is the width phase of the two tools, unchanged
(N runs of 10-11 s launched over 5 s, threads made before, a fresh database); the ratio is
this backend's CPU per run over the seed's in the same round.

    python -m bench.turns --seed-dir ../seed-express --width-steps 1000,4000,6000 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from bench import procs


def _seed_step(seed_dir: Path, n: int, out: Path) -> dict:
    command = [sys.executable, "-m", "bench.seed", "--seed-dir", str(seed_dir), "--phases", "width"]
    subprocess.run([*command, "--width-steps", str(n), "--out", str(out)], cwd=procs.ROOT, check=True)
    return json.loads((out / "seed-results.json").read_text())["steps"][0]


def _our_steps(strategies: str, n: int, out: Path) -> dict[str, dict]:
    command = [sys.executable, "-m", "bench", "--strategies", strategies, "--phases", "width"]
    command += ["--variants", "prepared", "--width-steps", str(n), "--no-publish", "--out", str(out)]
    subprocess.run(command, cwd=procs.ROOT, check=True)
    measured = json.loads((out / "results.json").read_text())["measured"]
    return {m["strategy"]: m["width"]["steps"][0] for m in measured}


def _per_run_ms(step: dict) -> float:
    return 1000 * step["processes"]["backend"]["cpu_seconds"] / step["n"]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.turns", description=__doc__)
    parser.add_argument("--seed-dir", type=Path, required=True, help="seed-express with its node_modules")
    parser.add_argument("--width-steps", default="1000,4000,6000")
    parser.add_argument("--strategies", default="poll,stream", help="this backend's, as `python -m bench` takes")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=procs.ROOT / "bench" / "out" / "turns")
    args = parser.parse_args(argv)
    widths = [int(n) for n in args.width_steps.split(",")]
    strategies = args.strategies.split(",")
    figures: dict[tuple[int, str], list[float]] = {}
    gave: dict[tuple[int, str], list[str]] = {}
    for r in range(args.rounds):
        for n in widths:
            measured: dict[str, dict] = {}
            for turn in ("seed", "ours") if r % 2 == 0 else ("ours", "seed"):
                if turn == "seed":
                    measured["seed"] = _seed_step(args.seed_dir, n, args.out / f"seed-{n}-{r}")
                else:
                    measured.update(_our_steps(args.strategies, n, args.out / f"ours-{n}-{r}"))
            for name, step in measured.items():
                figures.setdefault((n, name), []).append(_per_run_ms(step))
                gave.setdefault((n, name), []).extend(step["gave"])
    print("| N | backend | CPU per run, each round (ms) | over the seed's, each round | gave |")
    print("|---|---|---|---|---|")
    for n in widths:
        seed = figures[(n, "seed")]
        for name in ("seed", *strategies):
            mine = figures[(n, name)]
            ratios = [a / b for a, b in zip(mine, seed, strict=True)]
            shown = "-" if name == "seed" else ", ".join(f"{x:.2f}" for x in ratios)
            median = "" if name == "seed" else f" (median {statistics.median(ratios):.2f})"
            rounds = ", ".join(f"{x:.2f}" for x in mine)
            print(f"| {n:,} | {name} | {rounds} | {shown}{median} | {'; '.join(gave[(n, name)]) or '-'} |")


if __name__ == "__main__":
    main()

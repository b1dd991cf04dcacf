"""`python -m bench.side_by_side`: the seed's figures beside this backend's, from one session.

Reads the results of `python -m bench.seed` and `python -m bench` (both with width steps,
lag and pass-through) and prints the comparison table of docs/benchmarks.md; with --plot,
draws CPU per run, lag and peak memory per width step for each backend.

    python -m bench.side_by_side bench/out/seed/seed-results.json bench/out/side-by-side/results.json \
        --plot docs/benchmarks-seed.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _series(seed: dict, ours: dict) -> list[tuple[str, dict, list[dict]]]:
    """(name, lag phase, width steps) for the seed and each of this backend's strategies."""
    rows = [("seed (Express), polling", seed.get("lag", {}), seed.get("steps", []))]
    for measured in ours["measured"]:
        name = f"this backend, WAIT_STRATEGY={measured['strategy']}"
        rows.append((name, measured.get("lag", {}), measured.get("width", {}).get("steps", [])))
    return rows


def _cpu_per_run_ms(step: dict) -> float:
    return 1000 * step["processes"]["backend"]["cpu_seconds"] / step["n"]


def table(seed: dict, ours: dict) -> str:
    """The markdown table: per backend and width step, what held and what it cost."""
    lines = [
        "| backend | N | ok | waiting at once | lag p50 / p99 (ms) | PSS peak (MB) | backend CPU per run | "
        "fit: per POST / per poll / per waiting s (ms) | upstream CPU | gave |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, _lag, steps in _series(seed, ours):
        for step in steps:
            fit = step["cpu"]
            per_poll = fit.get("ms_per_poll")
            lines.append(
                f"| {name} | {step['n']:,} | {step['succeeded']:,} | {step['peak_waiting_upstream']:,} | "
                f"{step['lag_ms'].get('p50')} / {step['lag_ms'].get('p99')} | "
                f"{step['processes']['backend']['pss_peak_mb']:.0f} | **{_cpu_per_run_ms(step):.2f} ms** | "
                f"{fit.get('ms_per_run')} / {per_poll if per_poll is not None else '-'} / "
                f"{fit.get('ms_per_waiting_run_second')} | {step['processes']['fake']['cpu_percent_avg']:.0f}% | "
                f"{'; '.join(step['gave']) or '-'} |"
            )
    lines.append("")
    lag_head = "lag p50 / p99, 200 runs of 1-15 s, 50 at a time (ms)"
    lines.append(f"| | {lag_head} | upstream calls per run | pass-through p50 |")
    lines.append("|---|---|---|---|")
    overheads = [seed.get("overhead")] + [m.get("overhead") for m in ours["measured"]]
    for (name, lag, _steps), overhead in zip(_series(seed, ours), overheads, strict=True):
        lag_ms = lag.get("lag_ms", {})
        calls = lag.get("calls", {}).get("run_calls_per_run", "-")
        through = f"+{overhead['p50_difference_ms']:.2f} ms" if overhead else "-"
        lines.append(f"| {name} | {lag_ms.get('p50', '-')} / {lag_ms.get('p99', '-')} | {calls} | {through} |")
    return "\n".join(lines)


def plot(seed: dict, ours: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_cpu, ax_lag, ax_mem) = plt.subplots(1, 3, figsize=(17, 5))
    for name, _lag, steps in _series(seed, ours):
        if not steps:
            continue
        ns = [s["n"] for s in steps]
        for ax, values in (
            (ax_cpu, [_cpu_per_run_ms(s) for s in steps]),
            (ax_lag, [s["lag_ms"].get("p99", 0) / 1000 for s in steps]),
            (ax_mem, [s["processes"]["backend"]["pss_peak_mb"] for s in steps]),
        ):
            ax.plot(ns, values, marker="o", label=name)
            gave = [(n, v) for n, v, s in zip(ns, values, steps, strict=True) if s["gave"]]
            if gave:
                ax.plot(*zip(*gave, strict=True), linestyle="", marker="x", markersize=12, color="red")
    ax_lag.axhline(2.0, color="grey", linestyle=":", label="a step gives above 2 s")
    titles = (
        (ax_cpu, "Backend CPU per run (ms), waits included", "ms of CPU per run"),
        (ax_lag, "Lag p99 (s): answer after the upstream's end", "s"),
        (ax_mem, "Backend peak PSS (MB)", "MB"),
    )
    for ax, title, unit in titles:
        ax.set_title(title)
        ax.set_ylabel(unit)
        ax.set_xlabel("N runs of 10-11 s launched over 5 s; red x: the step gave")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.side_by_side", description=__doc__)
    parser.add_argument("seed", type=Path, help="seed-results.json of python -m bench.seed")
    parser.add_argument("ours", type=Path, help="results.json of python -m bench")
    parser.add_argument("--plot", type=Path, help="write the comparison plot (PNG) here")
    args = parser.parse_args(argv)
    seed, ours = json.loads(args.seed.read_text()), json.loads(args.ours.read_text())
    print(table(seed, ours))
    if args.plot:
        plot(seed, ours, args.plot)


if __name__ == "__main__":
    main()

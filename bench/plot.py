"""The plot: lag distribution per strategy, and width against memory and against CPU (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from bench.targets import label


def _lag_axis(ax, results: dict) -> None:
    for m in results["measured"]:
        lags = sorted(v * 1000 for v in m.get("lag", {}).get("lags_s", []))
        if lags:
            ax.plot(lags, [(i + 1) / len(lags) for i in range(len(lags))], label=label(m), drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("lag: client has the answer - upstream run final (ms, log)")
    ax.set_ylabel("share of runs")
    ax.set_title("Lag distribution (CDF)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def _width_series(results: dict):
    """(label, steps) per measured deployment and width variant."""
    for m in results["measured"]:
        for key, variant in (("width", "threads made before"), ("width_full", "full flow")):
            steps = m.get(key, {}).get("steps", [])
            if steps:
                yield f"{label(m)}, {variant}", steps, key == "width_full"


def _gave(ax, steps, values) -> None:
    gave = [(s["n"], v) for s, v in zip(steps, values, strict=True) if s["gave"]]
    if gave:
        ax.plot(*zip(*gave, strict=True), linestyle="", marker="x", markersize=12, color="red")


def _width_axis(ax, results: dict) -> None:
    for name, steps, full in _width_series(results):
        ns = [s["n"] for s in steps]
        pss = [s["processes"]["backend"]["pss_peak_mb"] for s in steps]
        ax.plot(ns, pss, marker="o", linestyle="--" if full else "-", label=name)
        _gave(ax, steps, pss)
    ax.set_xscale("log")
    ax.set_xlabel("N runs of 10-11 s launched over 5 s (log); red x: the step gave")
    ax.set_ylabel("backend process tree, peak PSS (MB)")
    ax.set_title("Width against memory")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def _cpu_axis(ax, results: dict) -> None:
    for name, steps, full in _width_series(results):
        ns = [s["n"] for s in steps]
        cpu = [s["processes"]["backend"]["cpu_percent_avg"] for s in steps]
        (line,) = ax.plot(ns, cpu, marker="o", linestyle="--" if full else "-", label=name)
        upstream = [s["processes"]["fake"]["cpu_percent_avg"] for s in steps]
        ax.plot(ns, upstream, marker=".", linestyle=":", color=line.get_color())
        _gave(ax, steps, cpu)
    ax.set_xscale("log")
    ax.set_xlabel("N runs of 10-11 s launched over 5 s (log); red x: the step gave")
    ax.set_ylabel("CPU, % of one core, averaged over the step (dotted: the fake upstream)")
    ax.set_title("Width against CPU (2 cores = 200%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)


def plot(results: dict, path: Path) -> bool:
    """Write the PNG; False (and no file) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lag, ax_mem, ax_cpu) = plt.subplots(1, 3, figsize=(19, 5.5))
    _lag_axis(ax_lag, results)
    _width_axis(ax_mem, results)
    _cpu_axis(ax_cpu, results)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

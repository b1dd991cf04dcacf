"""The plot: lag distribution per strategy, and width against memory (matplotlib, Agg)."""

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


def _width_axis(ax, results: dict) -> None:
    for m in results["measured"]:
        steps = m.get("width", {}).get("steps", [])
        if not steps:
            continue
        ns = [s["n"] for s in steps]
        pss = [s["processes"]["backend"]["pss_peak_mb"] for s in steps]
        rss = [s["processes"]["backend"]["rss_peak_mb"] for s in steps]
        (line,) = ax.plot(ns, pss, marker="o", label=f"{label(m)}")
        ax.plot(ns, rss, linestyle=":", color=line.get_color())
        gave = [(s["n"], p) for s, p in zip(steps, pss, strict=True) if s["gave"]]
        if gave:
            ax.plot(*zip(*gave, strict=True), linestyle="", marker="x", markersize=12, color="red")
    ax.set_xscale("log")
    ax.set_xlabel("N runs of 10-11 s launched over 5 s (log); red x: the step gave")
    ax.set_ylabel("backend process tree peak PSS (MB); dotted: RSS")
    ax.set_title("Width against memory")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot(results: dict, path: Path) -> bool:
    """Write the PNG; False (and no file) when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_lag, ax_mem) = plt.subplots(1, 2, figsize=(13, 5))
    _lag_axis(ax_lag, results)
    _width_axis(ax_mem, results)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True

"""The issue's targets, each said met or missed (and by how much) from the results."""

from __future__ import annotations

from bench import config
from bench.stats import percentile


def label(m: dict) -> str:
    """How a measured strategy and worker is named in tables."""
    streamed = ", streamed answers" if m.get("client") == "stream" else ""
    return f"{m['strategy']}{' (baseline)' if m['strategy'] == config.BASELINE else ''}, {m['worker']}{streamed}"


def _lagged(results: dict) -> list[dict]:
    return [m for m in results["measured"] if m.get("lag", {}).get("lag_ms", {}).get("p50") is not None]


def fastest_lag(results: dict) -> str | None:
    """Lag p50 <= 20 ms and p99 <= 100 ms with the fastest strategy (lowest p99)."""
    lagged = _lagged(results)
    if not lagged:
        return None
    best = min(lagged, key=lambda m: m["lag"]["lag_ms"]["p99"])
    lag = best["lag"]["lag_ms"]
    misses = []
    if lag["p50"] > config.TARGET_LAG_P50_MS:
        misses.append(f"p50 by {lag['p50'] - config.TARGET_LAG_P50_MS:.0f} ms")
    if lag["p99"] > config.TARGET_LAG_P99_MS:
        misses.append(f"p99 by {lag['p99'] - config.TARGET_LAG_P99_MS:.0f} ms")
    verdict = "missed: " + ", ".join(misses) if misses else "met"
    return (
        f"Lag p50 <= {config.TARGET_LAG_P50_MS} ms and p99 <= {config.TARGET_LAG_P99_MS} ms with the fastest "
        f"strategy ({label(best)}): {lag['p50']:g} / {lag['p99']:g} ms, {verdict}."
    )


def polling_vs_baseline(results: dict) -> list[str]:
    """Default polling >= 3x better lag than the baseline, at no more upstream calls per run-second."""
    out = []
    lagged = _lagged(results)
    for worker in dict.fromkeys(m["worker"] for m in lagged):
        pair = {m["strategy"]: m["lag"] for m in lagged if m["worker"] == worker}
        if "poll" not in pair or config.BASELINE not in pair:
            continue
        base, poll = pair[config.BASELINE], pair["poll"]
        f50 = base["lag_ms"]["p50"] / max(poll["lag_ms"]["p50"], 1e-9)
        f99 = base["lag_ms"]["p99"] / max(poll["lag_ms"]["p99"], 1e-9)
        ours, theirs = poll["calls"]["run_calls_per_run_second"], base["calls"]["run_calls_per_run_second"]
        ok = min(f50, f99) >= config.TARGET_LAG_FACTOR and ours <= theirs
        out.append(
            f"Default polling >= {config.TARGET_LAG_FACTOR:g}x better lag than the baseline at no more calls per "
            f"run-second ({worker}): {f50:.1f}x at p50, {f99:.1f}x at p99, {ours:g} vs {theirs:g} calls per "
            f"run-second: {'met' if ok else 'missed'}."
        )
    return out


def width(results: dict) -> list[str]:
    """Issue 11: the widest passing step (threads made before the step) against the strategy's target, < 1 GB."""
    out = []
    for m in results["measured"]:
        target = config.TARGET_WIDTH.get(m["strategy"])
        steps = m.get("width", {}).get("steps", [])
        if not target or not steps:
            continue
        reached = m["width"]["reached"]
        tried = max(s["n"] for s in steps)
        if reached >= tried and tried < target:  # a quick run, or steps chosen below the target
            out.append(
                f"Width >= {target:,} waiting runs under {config.TARGET_WIDTH_MEMORY_MB} MB ({label(m)}): "
                f"not measured: the largest step tried was {tried:,}, and it held."
            )
            continue
        by_n = {s["n"]: s for s in steps}
        pss = by_n[reached]["processes"]["backend"]["pss_peak_mb"] if reached else None
        ok = reached >= target and pss is not None and pss < config.TARGET_WIDTH_MEMORY_MB
        at = f"{reached:,} at {pss:.0f} MB PSS" if reached else "no step passed"
        gave = f"; gave at {steps[-1]['n']:,}: {'; '.join(m['width']['gave'])}" if m["width"]["gave"] else ""
        verdict = "met" if ok else f"missed: {at} ({target / max(reached, 1):.1f}x short){gave}"
        out.append(
            f"Width >= {target:,} waiting runs under {config.TARGET_WIDTH_MEMORY_MB} MB ({label(m)}): "
            + (f"{at}, met." if ok else f"{verdict}.")
        )
    return out


def overhead(results: dict) -> str | None:
    """Pass-through <= 2 ms at p50, judged on the median over every deployment measured (the
    pass-through path does not depend on the wait strategy, so the spread is noise)."""
    measured = [(m, m["overhead"]["p50_difference_ms"]) for m in results["measured"] if "overhead" in m]
    if not measured:
        return None
    middle = percentile([v for _, v in measured], 50)
    verdict = "met" if middle <= config.TARGET_OVERHEAD_MS else f"missed by {middle - config.TARGET_OVERHEAD_MS:.2f} ms"
    every = ", ".join(f"{label(m)} {v:+.2f}" for m, v in measured)
    head = f"Pass-through <= {config.TARGET_OVERHEAD_MS:g} ms at p50"
    return f"{head}: median over the deployments {middle:+.2f} ms, {verdict}; each: {every}."


def verdicts(results: dict) -> list[str]:
    """Every target's line, in the issue's order."""
    lines = [fastest_lag(results), *polling_vs_baseline(results), *width(results), overhead(results)]
    return [line for line in lines if line]

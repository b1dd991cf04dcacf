"""Small statistics: percentiles, lag summaries, and how many runs were running at once."""

from __future__ import annotations

import math


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), interpolated between the nearest ranks; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: list[float]) -> dict:
    """n, mean, p50, p95, p99 and max of durations given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    out = {"n": len(ms)}
    if not ms:
        return out
    out["mean"] = round(sum(ms) / len(ms), 1)
    for q in (50, 95, 99):
        out[f"p{q}"] = round(percentile(ms, q), 1)
    out["min"] = round(min(ms), 1)
    out["max"] = round(max(ms), 1)
    return out


def peak_overlap(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end) intervals that contain one same instant."""
    events = sorted(
        [(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals], key=lambda e: (e[0], e[1])
    )
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak

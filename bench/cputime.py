"""Measuring the CPU a call costs this process: a mean over many calls, or a cProfile on the CPU clock."""

from __future__ import annotations

import cProfile
import time


def cpu_per_call(fn, n: int) -> float:
    """Mean CPU seconds of this process per call of `fn`, over `n` calls after a warm-up."""
    for _ in range(min(20, n)):
        fn()
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n


def profiled(fn, n: int) -> cProfile.Profile:
    """cProfile of `n` calls of `fn`, on the CPU clock (waiting for the upstream does not count)."""
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    for _ in range(n):
        fn()
    profile.disable()
    return profile

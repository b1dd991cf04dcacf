"""A background thread that samples memory, CPU and threads of process trees while a phase runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from bench import procs


class Sampler:
    """Samples each named root's process tree every `interval` seconds until stopped.

    Memory (RSS and PSS) is taken for the roots named in `memory_of` only: reading
    smaps_rollup of a large process costs the sampler itself some CPU.
    """

    def __init__(
        self,
        roots: dict[str, int],
        memory_of: tuple[str, ...] = ("backend",),
        interval: float = 0.5,
        probe: Callable[[], dict] | None = None,
    ):
        self.roots = roots
        self.memory_of = memory_of
        self.interval = interval
        self.probe = probe  # something else to record at every sample (the fake upstream's counters)
        self.samples: dict[str, list[dict]] = {name: [] for name in (*roots, "machine", "sampler", "probe")}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._take()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._take()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._take()

    def _take(self) -> None:
        now = time.time()
        for name, root in self.roots.items():
            pids = procs.tree(root)
            sample = {"t": now, "cpu": procs.cpu_seconds(pids), "threads": procs.thread_count(pids)}
            if name in self.memory_of:
                sample["rss"], sample["pss"] = procs.memory(pids)
                # Each worker's own CPU: how evenly the workers share the load.
                sample["workers"] = {pid: procs.cpu_seconds([pid]) for pid in pids if pid != root}
            self.samples[name].append(sample)
        # The whole machine, and this process: what is left is other work on the machine.
        self.samples["machine"].append({"t": now, "cpu": procs.machine_busy_seconds(), "threads": 0})
        self.samples["sampler"].append({"t": now, "cpu": procs.cpu_seconds([os.getpid()]), "threads": 0})
        if self.probe is not None:
            self.samples["probe"].append({"t": now, **self.probe()})

    def summary(self, name: str) -> dict:
        """Peak memory, average and peak CPU% (of one core) and peak threads of one root's tree."""
        samples = self.samples[name]
        first, last = samples[0], samples[-1]
        wall = max(last["t"] - first["t"], 1e-9)
        rates = [
            100 * (b["cpu"] - a["cpu"]) / max(b["t"] - a["t"], 1e-9) for a, b in zip(samples, samples[1:], strict=False)
        ]
        out = {
            "cpu_percent_avg": round(100 * (last["cpu"] - first["cpu"]) / wall, 1),
            "cpu_percent_peak": round(max(rates, default=0.0), 1),
            "cpu_seconds": round(last["cpu"] - first["cpu"], 2),
            "threads_peak": max(s["threads"] for s in samples),
        }
        if name in self.memory_of:
            out["rss_peak_mb"] = round(max(s["rss"] for s in samples) / 2**20, 1)
            out["pss_peak_mb"] = round(max(s["pss"] for s in samples) / 2**20, 1)
            pids = set(first["workers"]) & set(last["workers"])
            out["workers_cpu_seconds"] = sorted(
                (round(last["workers"][p] - first["workers"][p], 2) for p in pids), reverse=True
            )
        return out

    def timeline(self, name: str) -> list[dict]:
        """The raw samples of one root, times relative to the first."""
        samples = self.samples[name]
        t0 = samples[0]["t"] if samples else 0.0
        return [{**s, "t": round(s["t"] - t0, 2)} for s in samples]


def wait_for_quiet(roots: dict[str, int], limit_percent: float = 30.0, patience: float = 90.0, log=print) -> float:
    """Wait (at most `patience` s) until the rest of the machine uses under `limit_percent` of a core.

    The machine may be shared: a measurement taken while other work runs is
    slower than the code under test. Returns the last share seen, in %.
    """
    deadline = time.monotonic() + patience
    while True:
        ours = [pid for root in (*roots.values(), os.getpid()) for pid in procs.tree(root)]
        before, ours_before, t0 = procs.machine_busy_seconds(), procs.cpu_seconds(ours), time.monotonic()
        time.sleep(1.0)
        elapsed = time.monotonic() - t0
        others = 100 * ((procs.machine_busy_seconds() - before) - (procs.cpu_seconds(ours) - ours_before)) / elapsed
        if others < limit_percent:
            return round(others, 1)
        if time.monotonic() > deadline:
            log(f"    the machine stays busy ({others:.0f}% of a core outside the benchmark): measuring anyway")
            return round(others, 1)

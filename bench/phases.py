"""The measured phases: lag and upstream calls, one width step, and pass-through overhead."""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from bench import config, overhead, procs
from bench.deployment import Deployment
from bench.fake import POLL_ROUTES, RUN_ROUTES, FakeControl, request_delta
from bench.sampler import Sampler, wait_for_quiet
from bench.stats import peak_overlap, summary_ms

CLIENT_TIMEOUT_S = 90.0  # beyond the backend's 60 s deadline: the client never gives up first


def _spec_file(dep: Deployment, runs: list[dict], concurrency: int | None, work_dir: Path, name: str) -> Path:
    spec = {
        "host": "127.0.0.1",
        "port": dep.backend_port,
        "prefix": "/api/openai",
        "runs": runs,
        "concurrency": concurrency,
        "timeout": CLIENT_TIMEOUT_S,
        "tokens": dep.tokens,
        "stream": dep.plan.client == "stream",
        "run_body": getattr(dep, "run_body", {}),
    }
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / f"{name}.spec.json"
    path.write_text(json.dumps(spec))
    return path


def _prepare(dep: Deployment, runs: list[dict], work_dir: Path, name: str) -> None:
    """Make each run's thread and message before the step (not sampled), and give the runs their threads."""
    spec_path, out_path = _spec_file(dep, runs, dep.plan.prepare_concurrency, work_dir, name), work_dir / f"{name}.ids"
    subprocess.run([sys.executable, "-m", "bench.load", "--prepare", spec_path, out_path], cwd=procs.ROOT, check=True)
    for run, thread_id in zip(runs, json.loads(out_path.read_text()), strict=True):
        run["thread_id"] = thread_id


def _polls_now(control: FakeControl) -> dict:
    requests = control.stats()["requests"]
    return {"polls": sum(n for route, n in requests.items() if route in POLL_ROUTES)}


def _load(
    dep: Deployment, runs: list[dict], concurrency: int | None, work_dir: Path, name: str
) -> tuple[dict, Sampler]:
    """Run the load generator in its own process while sampling every process tree (and the upstream's polls)."""
    spec_path = _spec_file(dep, runs, concurrency, work_dir, name)
    out_path = work_dir / f"{name}.records.json"
    client = subprocess.Popen([sys.executable, "-m", "bench.load", str(spec_path), str(out_path)], cwd=procs.ROOT)
    control = FakeControl(dep.fake_port)  # the sampler's own connection
    try:
        with Sampler({**dep.roots, "client": client.pid}, probe=lambda: _polls_now(control)) as sampler:
            if client.wait() != 0:
                raise RuntimeError(f"the load generator failed (exit {client.returncode})")
    finally:
        control.close()
    return json.loads(out_path.read_text()), sampler


def _attach_upstream(dep: Deployment, records: list[dict]) -> None:
    """Add the fake upstream's creation and final instants, and the lag, to each record with a run."""
    for record in records:
        if not record.get("run_id"):
            continue
        info = dep.control.run_info(record["run_id"])
        record["upstream_created"] = info["created_at"]
        record["final_at"] = info["final_at"]
        record["polls"] = info["polls"]
        if record.get("ok") and info["final_at"] is not None:
            record["lag"] = record["done"] - info["final_at"]
            if "first_delta" in record:
                record["first_text_lag"] = record["first_delta"] - first_word_at(info, record["text"])


def first_word_at(info: dict, text: str) -> float:
    """When the fake upstream wrote the reply's first word: it writes one word after another, evenly
    spaced between the run's start (queued for min(0.1 s, a quarter of it)) and its end
    (fake_openai/events.py Writing)."""
    start, end = info["created_at"], info["final_at"]
    start += min(0.1, (end - start) / 4)
    words = len(re.findall(r"\S+\s*|\s+", text))
    return start + (end - start) / (words + 1)


def _streamed(records: list[dict]) -> dict:
    """For streamed answers: time to the answer's first byte and to its first text from the request,
    and from the upstream's first word to the client's first delta."""
    ok = [r for r in records if r.get("ok") and "first_delta" in r]
    if not ok:
        return {}
    return {
        "first_byte_ms": summary_ms([r["first_byte"] - r["run_sent"] for r in ok]),
        "first_delta_ms": summary_ms([r["first_delta"] - r["run_sent"] for r in ok]),
        "first_text_lag_ms": summary_ms([r["first_text_lag"] for r in ok if "first_text_lag" in r]),
    }


def _errors(records: list[dict], keep: int = 5) -> list[str]:
    counts = Counter(r.get("error", "") for r in records if not r.get("ok"))
    return [f"{n} x {error}" for error, n in counts.most_common(keep)]


def _processes(sampler: Sampler, loaded: dict) -> dict:
    """CPU, threads and memory of each watched tree; `others`: the rest of the machine's CPU use."""
    out = {name: sampler.summary(name) for name in (*sampler.roots, "machine", "sampler")}
    # The client has exited by the last sample: its own account of its CPU time is the one to trust.
    wall = max(loaded["ended"] - loaded["started"], 1e-9)
    out["client"]["cpu_seconds"] = round(loaded["cpu_seconds"], 2)
    out["client"]["cpu_percent_avg"] = round(100 * loaded["cpu_seconds"] / wall, 1)
    ours = sum(out[name]["cpu_percent_avg"] for name in (*sampler.roots, "sampler"))
    out["others"] = {"cpu_percent_avg": round(out["machine"]["cpu_percent_avg"] - ours, 1)}
    return out


def lag_and_calls(dep: Deployment, work_dir: Path) -> dict:
    """`lag_runs` runs of uniform `lag_min_s`-`lag_max_s` durations, `lag_concurrency` at a time."""
    plan = dep.plan
    rng = random.Random(plan.seed)
    runs = [{"duration": round(rng.uniform(plan.lag_min_s, plan.lag_max_s), 3)} for _ in range(plan.lag_runs)]
    dep.control.reset()
    quiet = wait_for_quiet(dep.roots, patience=dep.plan.quiet_patience_s)
    before = dep.control.stats()
    loaded, sampler = _load(dep, runs, plan.lag_concurrency, work_dir, f"lag-{dep.worker}-{dep.strategy}")
    after = dep.control.stats()
    records = loaded["records"]
    _attach_upstream(dep, records)
    requests = request_delta(before, after)
    run_calls = sum(n for route, n in requests.items() if route in RUN_ROUTES)
    polls = sum(n for route, n in requests.items() if route in POLL_ROUTES)
    run_seconds = sum(r["duration"] for r in runs)
    ok = [r for r in records if r.get("ok")]
    return {
        "runs": len(runs),
        "concurrency": plan.lag_concurrency,
        "succeeded": len(ok),
        "errors": _errors(records),
        "lag_ms": summary_ms([r["lag"] for r in ok if "lag" in r]),
        "lags_s": [round(r["lag"], 4) for r in ok if "lag" in r],
        "streamed": _streamed(records),
        "calls": {
            "run_calls_per_run": round(run_calls / len(runs), 2),
            "run_calls_per_run_second": round(run_calls / run_seconds, 3),
            "polls_per_run": round(polls / len(runs), 2),
            "all_upstream_per_run": round(sum(requests.values()) / len(runs), 2),
            "run_seconds": round(run_seconds, 1),
            "by_route": requests,
        },
        "processes": _processes(sampler, loaded),
        "wall_s": round(loaded["ended"] - loaded["started"], 1),
        "others_before_percent": quiet,
    }


def _overlap(a: float, b: float, start: float, end: float) -> float:
    return max(0.0, min(b, end) - max(a, start))


def cpu_costs(sampler: Sampler, records: list[dict], n: int) -> dict:
    """The backend's CPU split over what it did, by least squares over the sampler's 0.5 s intervals:

        CPU in an interval = a * runs created upstream in it + d * answers sent in it
                             + e * run-seconds waited in it

    CPU per POST .../runs (creation to answer, without the wait) is a + d, per waiting
    run-second e, and per poll e times the run-seconds over the polls the upstream saw.
    """
    out: dict = {"ms_per_run": None, "ms_per_poll": None, "ms_per_waiting_run_second": None}
    runs = [r for r in records if r.get("upstream_created") and r.get("final_at") and r.get("done")]
    backend, probes = sampler.samples["backend"], sampler.samples["probe"]
    if len(runs) < 10 or len(backend) < 8:
        return out
    import numpy

    rows, cpu = [], []
    for before, after in zip(backend, backend[1:], strict=False):
        t0, t1 = before["t"], after["t"]
        rows.append(
            [
                sum(t0 <= r["upstream_created"] < t1 for r in runs),
                sum(t0 <= r["done"] < t1 for r in runs),
                sum(_overlap(r["upstream_created"], r["final_at"], t0, t1) for r in runs),
            ]
        )
        cpu.append(after["cpu"] - before["cpu"])
    (a, d, e), *_ = numpy.linalg.lstsq(numpy.array(rows, dtype=float), numpy.array(cpu), rcond=None)
    run_seconds = sum(r["final_at"] - r["upstream_created"] for r in runs)
    polls = probes[-1]["polls"] - probes[0]["polls"] if len(probes) > 1 else 0
    out.update(
        ms_per_run=round(1000 * max(0.0, a + d), 2),
        ms_per_waiting_run_second=round(1000 * max(0.0, e), 3),
        ms_per_poll=round(1000 * max(0.0, e) * run_seconds / polls, 3) if polls else None,
        polls_per_second=round(polls / max(backend[-1]["t"] - backend[0]["t"], 1e-9), 1),
    )
    return out


def width_step(dep: Deployment, n: int, work_dir: Path, variant: str = "prepared") -> dict:
    """N runs of `width_min_s`-`width_max_s`, launched evenly over `width_launch_s`, on a fresh backend.

    "prepared": each run's thread and message are made before the step, which is N POST .../runs;
    "full": the whole flow of each run is inside the step."""
    plan = dep.plan
    dep.start_backend()
    dep.control.reset()
    rng = random.Random(plan.seed + n)
    runs = [
        {"duration": round(rng.uniform(plan.width_min_s, plan.width_max_s), 3), "at": i * plan.width_launch_s / n}
        for i in range(n)
    ]
    name = f"width-{dep.worker}-{dep.strategy}-{variant}-{n}"
    if variant == "prepared":
        _prepare(dep, runs, work_dir, name)
    quiet = wait_for_quiet(dep.roots, patience=dep.plan.quiet_patience_s)
    idle_rss, idle_pss = procs.memory(procs.tree(dep.backend.pid))
    loaded, sampler = _load(dep, runs, None, work_dir, name)
    records = loaded["records"]
    _attach_upstream(dep, records)
    (work_dir / f"{name}.records.json").write_text(json.dumps({**loaded, "samples": sampler.samples}))
    ok = [r for r in records if r.get("ok")]
    lags = [r["lag"] for r in ok if "lag" in r]
    intervals = [(r["upstream_created"], r["final_at"]) for r in records if r.get("final_at") is not None]
    waiting = peak_overlap(intervals)
    lag = summary_ms(lags)
    # How long the thread and message requests took: the server's queue before a run can start.
    setup = summary_ms([r["run_sent"] - r["launched"] for r in records if "run_sent" in r])
    processes = _processes(sampler, loaded)
    backend = processes["backend"]
    gave = []
    if len(ok) < config.MIN_SUCCESS * n:
        gave.append(f"success {len(ok)}/{n}")
    if not lags or lag["p99"] > config.MAX_P99_LAG_S * 1000:
        gave.append(f"lag p99 {lag.get('p99', 'n/a')} ms")
    if waiting < config.MIN_WAITING_SHARE * n:
        gave.append(f"only {waiting}/{n} waiting upstream at once")
    return {
        "n": n,
        "variant": variant,
        "succeeded": len(ok),
        "errors": _errors(records),
        "lag_ms": lag,
        "streamed": _streamed(records),
        "peak_waiting_upstream": waiting,
        "setup_ms": setup,
        "idle_rss_mb": round(idle_rss / 2**20, 1),
        "idle_pss_mb": round(idle_pss / 2**20, 1),
        "kb_per_waiting_run": round((backend["pss_peak_mb"] - idle_pss / 2**20) * 1024 / n, 1),
        "processes": processes,
        "cpu": cpu_costs(sampler, records, n),
        "wall_s": round(loaded["ended"] - loaded["started"], 1),
        "gave": gave,
        "others_before_percent": quiet,
    }


def width(dep: Deployment, work_dir: Path, steps: tuple[int, ...], log=print, variant: str = "prepared") -> dict:
    """Step N up until a step gives; the widest passing N is `reached`."""
    results, reached = [], 0
    for n in steps:
        started = time.monotonic()
        step = width_step(dep, n, work_dir, variant)
        results.append(step)
        cpu = step["cpu"]
        log(
            f"    width {variant} {n}: {step['succeeded']}/{n} ok, lag p99 {step['lag_ms'].get('p99')} ms, "
            f"{step['peak_waiting_upstream']} waiting at once, PSS {step['processes']['backend']['pss_peak_mb']} MB, "
            f"backend CPU {step['processes']['backend']['cpu_percent_avg']}% "
            f"(workers {step['processes']['backend']['workers_cpu_seconds']} s), "
            f"upstream {step['processes']['fake']['cpu_percent_avg']}%; ms/run {cpu['ms_per_run']}, "
            f"ms/poll {cpu['ms_per_poll']}, ms/run-s {cpu['ms_per_waiting_run_second']}, "
            f"{time.monotonic() - started:.0f}s" + (f" -> gave: {'; '.join(step['gave'])}" if step["gave"] else "")
        )
        if step["gave"]:
            break
        reached = n
    return {
        "steps": results,
        "reached": reached,
        "gave": results[-1]["gave"] if results and results[-1]["gave"] else [],
    }


def pass_through(dep: Deployment) -> dict:
    """The overhead phase on the running deployment."""
    quiet = wait_for_quiet(dep.roots, patience=dep.plan.quiet_patience_s)
    return {
        **overhead.measure(dep.backend_port, dep.fake_port, dep.plan.overhead_calls, dep.tokens[0]),
        "others_before_percent": quiet,
    }

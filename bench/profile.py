"""`python -m bench.profile`: the CPU cost of one poll and of each API call, and where it goes.

The backend app is built in this process (Flask's test client, no gunicorn) against
the fake upstream in its own process, so that time.process_time() counts the
backend's CPU alone; cProfile runs on the same CPU clock.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import procs
from bench.config import STRATEGIES

AREAS = (
    ("openai", "openai SDK"),
    ("pydantic", "pydantic"),
    ("httpx2", "httpx2 client"),
    ("httpcore2", "httpcore2 (HTTP/1.1 on the socket, connection pool)"),
    ("h11", "h11 (HTTP parsing)"),
    ("/app/", "the backend's own code"),
    ("sqlalchemy", "SQLAlchemy"),
    ("sqlite3", "sqlite3"),
    ("limits", "limits (rate limits)"),
    ("prometheus_client", "prometheus_client"),
    ("flask_cors", "flask-cors"),
    ("flask", "Flask"),
    ("werkzeug", "werkzeug (test client, routing, request/response)"),
    ("logging", "logging"),
    ("json", "json"),
)


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


def _area(filename: str) -> str:
    for needle, name in AREAS:
        if needle in filename:
            return name
    if filename.startswith(("~", "<")):
        return "C built-ins (socket calls, sqlite3 C calls, str, dict ...)"
    return "other Python (stdlib, typing ...)"


def by_area(profile: cProfile.Profile) -> dict[str, float]:
    """Own CPU time per area, summed over every function of that area."""
    areas: dict[str, float] = defaultdict(float)
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profile).stats.items():
        areas[_area(filename)] += tottime
    return dict(sorted(areas.items(), key=lambda kv: -kv[1]))


def print_profile(title: str, profile: cProfile.Profile, top: int) -> None:
    areas = by_area(profile)
    total = sum(areas.values())
    print(f"\n{title} (share of own CPU time under cProfile):")
    for area, seconds in areas.items():
        if seconds / total >= 0.005:
            print(f"  {100 * seconds / total:5.1f}%  {area}")
    if top:
        pstats.Stats(profile).sort_stats("tottime").print_stats(top)


def print_app_functions(title: str, profile: cProfile.Profile, limit: int = 20) -> None:
    """The backend's own functions by inclusive CPU share: which step of a request costs what."""
    stats = pstats.Stats(profile).stats
    total = sum(row[2] for row in stats.values())
    rows = sorted(((key, row) for key, row in stats.items() if "/app/" in key[0]), key=lambda kv: -kv[1][3])
    print(f"\n{title} (inclusive share of all CPU under cProfile):")
    for (filename, line, name), row in rows[:limit]:
        print(f"  {100 * row[3] / total:5.1f}%  app/{filename.split('/app/', 1)[1]}:{line} {name}")


def build_app(fake_port: int, work: Path):
    """The backend app of the code in this tree, configured as the benchmark's deployment."""
    env = procs.backend_env(fake_port, f"sqlite:///{work / 'profile.db'}", STRATEGIES["poll"], {})
    procs.migrate(env)
    os.environ.clear()
    os.environ.update(env)
    sys.path.insert(0, str(procs.ROOT))
    from app import create_app

    return create_app()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--calls", type=int, default=300, help="calls measured per line")
    parser.add_argument("--top", type=int, default=0, help="also list the top functions of each profile")
    parser.add_argument("--fake-server", default="gevent", choices=("werkzeug", "gthread", "gevent"))
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-profile-"))
    fake_port = procs.free_port()
    fake = procs.start_fake(fake_port, args.fake_server, work)
    try:
        app = build_app(fake_port, work)
        backend = app.extensions["services"]
        client = app.test_client()
        # As deployed: token auth (and per-user limits) on every API call.
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {next(iter(backend.settings.api_tokens))}"

        def new_thread() -> str:
            return client.post("/api/openai/threads", json={}).get_json()["id"]

        def message(thread_id: str, text: str = "hello") -> None:
            client.post(f"/api/openai/threads/{thread_id}/messages", json={"role": "user", "content": text})

        def whole_run() -> None:  # a run of 0 s: creation, one look (after a sleep), the records
            thread_id = new_thread()
            message(thread_id, "q [fake duration=0]")
            client.post(f"/api/openai/threads/{thread_id}/runs", json={})

        listed = new_thread()
        message(listed)
        polled = new_thread()
        message(polled, "q [fake duration=3600]")
        run = backend.engine.start_run(polled, backend.settings.assistant_types[0], None, None, timeout=10).run

        def poll():
            return backend.engine.get_run(polled, run["id"])

        fake_before = procs.cpu_seconds(procs.tree(fake.pid))
        lines = [("one poll (engine.get_run)", cpu_per_call(poll, args.calls))]
        fake_cpu = (procs.cpu_seconds(procs.tree(fake.pid)) - fake_before) / (args.calls + min(20, args.calls))
        lines.append((f"the fake upstream ({args.fake_server}) answering one poll", fake_cpu))
        thread_cpu = cpu_per_call(new_thread, args.calls)
        lines.append(("POST /api/openai/threads", thread_cpu))
        lines.append(("POST .../messages", cpu_per_call(lambda: message(new_thread()), args.calls) - thread_cpu))
        lines.append(
            (
                "GET  .../messages (the pass-through call)",
                cpu_per_call(lambda: client.get(f"/api/openai/threads/{listed}/messages"), args.calls),
            )
        )
        lines.append(
            (
                "the whole flow of one run of 0 s: thread, message, POST .../runs",
                cpu_per_call(whole_run, args.calls // 3),
            )
        )
        lines.append(
            ("GET  /healthz (Flask and the app's hooks only)", cpu_per_call(lambda: client.get("/healthz"), args.calls))
        )
        poll_profile = profiled(poll, args.calls)
        flow_profile = profiled(whole_run, args.calls // 3)
        list_profile = profiled(lambda: client.get(f"/api/openai/threads/{listed}/messages"), args.calls)
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)

    print("CPU per call in this process (the backend app without gunicorn; the fake upstream apart):")
    for name, seconds in lines:
        print(f"  {seconds * 1000:6.2f} ms  {name}")
    print_profile("Where a poll's CPU goes", poll_profile, args.top)
    print_profile("Where the CPU of a run's whole flow goes (3 requests, 0 s run)", flow_profile, args.top)
    print_app_functions("The same flow by the backend's functions", flow_profile)
    print_profile("Where the CPU of GET .../messages goes", list_profile, args.top)
    print_app_functions("GET .../messages by the backend's functions", list_profile, 10)


if __name__ == "__main__":
    main()

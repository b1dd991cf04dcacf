"""`python -m bench.post_cost`: where the CPU of one `POST .../runs` goes, part by part.

The backend app is built in this process as a gunicorn worker runs it (token auth,
per-user limits counted in the workers' shared SQLite file, Prometheus metrics in
multiprocess files, the default logging to stderr), against the fake upstream in
its own process, so that time.process_time() counts the backend's CPU alone. Each
run's thread and message are made before the measure; a run lasts 0 s upstream
and is looked at once (POLL_FIRST_MS=1), so a POST is: the request, the checks, the
lock, the creation upstream, one look, the records, the answer.

The parts are timed by wrapping the functions that do them (no profiler): each
wrapper charges its own CPU minus that of the wrapped parts inside it, so the
parts add up to the whole. What no wrapper covers is Flask and werkzeug (routing,
request and response objects, hooks' dispatch); the test client's own work is
outside the app and not counted.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from bench import procs
from bench.config import STRATEGIES

_charged: dict[str, float] = defaultdict(float)
_stack: list[list[float]] = []
_show_sql = False  # --show-sql  # per open part: [its start, CPU of the parts inside it]


def _timed(part: str, fn):
    """`fn`, its CPU charged to `part` (less that of the parts timed inside it)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        frame = [time.process_time(), 0.0]
        _stack.append(frame)
        try:
            return fn(*args, **kwargs)
        finally:
            spent = time.process_time() - frame[0]
            _stack.pop()
            _charged[part] += spent - frame[1]
            if _stack:
                _stack[-1][1] += spent

    wrapper.__wrapped_part__ = part
    return wrapper


def _patch(owner, name: str, part: str) -> None:
    if hasattr(owner, name):  # an older tree (--code) may not have it
        setattr(owner, name, _timed(part, getattr(owner, name)))


def _wrap_hooks(funcs: dict, parts: dict) -> None:
    """Time the app's before/after_request hooks by their names."""
    for hooks in funcs.values():
        for i, hook in enumerate(hooks):
            part = parts.get(hook.__name__)
            if part:
                hooks[i] = _timed(part, hook)


class Counts:
    """Database transactions and connection checkouts seen (SQLAlchemy events), and the
    rate limits' own SQLite transactions."""

    def __init__(self, engine, windows):
        import sqlalchemy as sa

        self.begins = self.checkouts = self.statements = 0
        sa.event.listen(engine, "begin", self._begin)
        sa.event.listen(engine, "before_cursor_execute", self._statement)
        sa.event.listen(engine.pool, "checkout", self._checkout)
        self.windows = windows

    def _begin(self, _conn):
        self.begins += 1

    def _statement(self, _conn, _cursor, statement, *_args):
        self.statements += 1
        if _show_sql:
            print("SQL through SQLAlchemy:", statement.split("\n")[0][:120])

    def _checkout(self, *_args):
        self.checkouts += 1

    def snapshot(self) -> tuple[int, int, int, int]:
        hits = getattr(self.windows, "_hits", 0)
        return self.begins, self.checkouts, self.statements, hits


def instrument(app) -> None:
    """Wrap every part of a POST .../runs (see PARTS in the output)."""
    import logging

    from app import metrics, usage
    from app.api import idempotency, runs, validation
    from app.engines.responses import ResponsesEngine
    from app.runs import driver, service
    from app.store.records import Records
    from app.store.usage import UsageStore

    app.wsgi_app = _timed("Flask and werkzeug: routing, request and response objects, hook dispatch", app.wsgi_app)
    _wrap_hooks(
        app.before_request_funcs,
        {
            "start": "request ID (logs.start)",
            "complete_body": "validation: body read and complete",
            "authenticate_and_count": "rate limits (two per-user windows)",
            "note_arrival": "routing hooks of the runs blueprint",
            "authenticate_caller": "routing hooks of the runs blueprint",
        },
    )
    _wrap_hooks(app.after_request_funcs, {"finish": "access log line (logs.finish)"})
    import app.auth as auth
    import app.ratelimit as ratelimit

    ratelimit.authenticate = _timed("auth (token)", auth.authenticate)
    for name, view in list(app.view_functions.items()):
        if name.endswith("runs.create_run"):
            app.view_functions[name] = _timed("validation: the view's checks (body, type, tools, numbers)", view)
    _patch(runs, "_answer", "service and driver (own code)")
    _patch(runs, "jsonify", "JSON answer (jsonify)")
    _patch(validation, "parsed_json", "validation: JSON parse")
    for name in ("claim_idempotency_key", "finish_idempotency_key"):
        _patch(Records, name, "database: idempotency key")
    recorded = ("thread_owner", "lock_thread", "lock_owned_thread", "waiting_runs", "run_started", "run_ended")
    for name in (*recorded, "save_run", "add_messages", "save_step", "step"):
        _patch(Records, name, f"database: {name}")
    _patch(UsageStore, "add", "database: usage row")
    _patch(UsageStore, "month_rows", "database: budget sums")
    _patch(usage, "record_run", "usage bookkeeping (own code)")
    _patch(usage, "check_budget", "budget check (own code)")
    _patch(ResponsesEngine, "start_run", "upstream: create (lean client)")
    _patch(ResponsesEngine, "get_run", "upstream: one look (lean client)")
    for name in ("run_started", "run_ended", "run_finished", "tokens_used"):
        _patch(metrics, name, "metrics (prometheus_client)")
    _patch(logging.Logger, "_log", "logging: the run's lines and the access line, formatted and written")
    _ = (idempotency, driver, service)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.post_cost", description=__doc__)
    parser.add_argument("--runs", type=int, default=300, help="POST .../runs measured per round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (the spread is over them)")
    parser.add_argument("--idempotency-key", action="store_true", help="send an Idempotency-Key with each POST")
    parser.add_argument("--strategy", default="poll", choices=sorted(STRATEGIES))
    parser.add_argument("--top", type=int, default=0, help="also profile the POSTs (cProfile): the top functions")
    parser.add_argument("--sort", default="tottime", help="the profile's order (pstats: tottime, cumulative, ...)")
    parser.add_argument(
        "--code", type=Path, default=procs.ROOT, help="the tree whose app is measured (an older commit's `git archive`)"
    )
    parser.add_argument("--show-sql", action="store_true", help="print the statements sent through SQLAlchemy")
    parser.add_argument(
        "--gevent", action="store_true", help="patch the standard library with gevent first, as a gevent worker does"
    )
    args = parser.parse_args(argv)
    if args.gevent:
        from gevent import monkey

        monkey.patch_all()
    global _show_sql
    _show_sql = args.show_sql

    work = Path(tempfile.mkdtemp(prefix="bench-post-"))
    fake_port = procs.free_port()
    fake = procs.start_fake(fake_port, "gevent", work)
    try:
        # As a gunicorn worker has them (gunicorn.conf.py sets both before the workers start).
        extra = {
            "POLL_FIRST_MS": "1",
            "RATELIMIT_SHARED_FILE": str(work / "ratelimit.sqlite"),
            "PROMETHEUS_MULTIPROC_DIR": str(work / "metrics"),
        }
        (work / "metrics").mkdir()
        env = procs.backend_env(fake_port, f"sqlite:///{work / 'post.db'}", STRATEGIES[args.strategy], extra)
        procs.migrate(env, args.code)
        os.environ.clear()
        os.environ.update(env)
        sys.path.insert(0, str(args.code.resolve()))
        import logging

        from app import create_app

        if args.gevent:
            from app.gevent_tuning import adjust_for_gevent

            adjust_for_gevent()
        app = create_app()
        logging.getLogger("app").handlers[0].stream = open(os.devnull, "w")  # written, as to a pipe, not shown
        backend = app.extensions["services"]
        client = app.test_client()
        tokens = list(backend.settings.api_tokens)  # the benchmark's 50 users, in turn
        user_of_thread: dict[str, str] = {}

        def prepared_thread() -> str:
            auth = {"Authorization": f"Bearer {tokens[len(user_of_thread) % len(tokens)]}"}
            thread_id = client.post("/api/openai/threads", json={}, headers=auth).get_json()["id"]
            user_of_thread[thread_id] = auth["Authorization"]
            client.post(
                f"/api/openai/threads/{thread_id}/messages",
                json={"role": "user", "content": "q [fake duration=0]"},
                headers=auth,
            )
            return thread_id

        counter = iter(range(10**9))

        def post_run(thread_id: str) -> None:
            headers = {"Authorization": user_of_thread[thread_id]}
            if args.idempotency_key:
                headers["Idempotency-Key"] = f"k{next(counter)}"
            answer = client.post(f"/api/openai/threads/{thread_id}/runs", json={}, headers=headers)
            if answer.status_code != 200 or answer.get_json()["status"] != "completed":
                raise SystemExit(f"POST .../runs answered {answer.status_code}: {answer.get_data(as_text=True)}")

        def look():
            return backend.engine.get_run(looked, looked_run)

        for thread_id in [prepared_thread() for _ in range(20)]:
            post_run(thread_id)  # warm-up: imports, caches, pools
        looked = prepared_thread()
        client.post(
            f"/api/openai/threads/{looked}/messages",
            json={"role": "user", "content": "[fake duration=3600]"},
            headers={"Authorization": user_of_thread[looked]},
        )
        looked_run = backend.engine.start_run(looked, backend.settings.assistant_types[0], None, None, timeout=10).run[
            "id"
        ]

        plain, looks = [], []
        for _ in range(args.rounds):
            threads = [prepared_thread() for _ in range(args.runs)]
            started = time.process_time()
            for thread_id in threads:
                post_run(thread_id)
            plain.append((time.process_time() - started) / args.runs)
            started = time.process_time()
            for _ in range(args.runs):
                look()
            looks.append((time.process_time() - started) / args.runs)

        instrument(app)
        counts = Counts(backend.records.db, app.extensions.get("ratelimit"))
        threads = [prepared_thread() for _ in range(args.runs)]
        _charged.clear()
        before = counts.snapshot()
        started = time.process_time()
        for thread_id in threads:
            post_run(thread_id)
        timed_total = (time.process_time() - started) / args.runs
        after = counts.snapshot()
        per_post = {part: seconds / args.runs for part, seconds in _charged.items()}
        if args.top:
            import cProfile
            import pstats

            threads = [prepared_thread() for _ in range(args.runs)]
            profile = cProfile.Profile(time.process_time)
            profile.enable()
            for thread_id in threads:
                post_run(thread_id)
            profile.disable()
            pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)
    finally:
        fake.stop()
        shutil.rmtree(work, ignore_errors=True)

    in_app = sum(per_post.values())
    begins, checkouts, statements, hits = (b - a for a, b in zip(before, after, strict=True))
    print(f"CPU per POST .../runs ({args.strategy}, {args.runs} runs x {args.rounds} rounds, no wrappers):")
    print(
        f"  median {statistics.median(plain) * 1000:.3f} ms, rounds "
        + ", ".join(f"{x * 1000:.3f}" for x in plain)
        + " (the whole process: the test client's work included)"
    )
    print(
        f"CPU per look (engine.get_run): median {statistics.median(looks) * 1000:.3f} ms, rounds "
        + ", ".join(f"{x * 1000:.3f}" for x in looks)
    )
    print(
        f"Per POST: {checkouts / args.runs:.2f} database connection checkouts (one transaction each), of which "
        f"{begins / args.runs:.2f} through SQLAlchemy Connections ({statements / args.runs:.2f} statements); "
        f"{hits / args.runs:.2f} rate-limit transactions (the shared counters file)"
    )
    print(
        f"\nBy part, timed by wrappers ({timed_total * 1000:.3f} ms per POST with them, "
        f"{in_app * 1000:.3f} ms inside the app):"
    )
    for part, seconds in sorted(per_post.items(), key=lambda kv: -kv[1]):
        print(f"  {seconds * 1e6:8.1f} us  {100 * seconds / in_app:5.1f}%  {part}")


if __name__ == "__main__":
    main()

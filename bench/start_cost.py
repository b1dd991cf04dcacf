"""`python -m bench.start_cost`: the CPU of a whole run of 0 s, one at a time, beside the seed and the stack's floor.

Each subject serves `POST /api/openai/threads/{id}/runs` on its own port against the
fake upstream (gunicorn + gevent, its own process); a run lasts 0 s upstream, so every
subject does the same upstream work: create the run, look at it once, answer it. The
requests go one after another, each on a new connection (as the width step's prepared
runs come), and the subject's process tree's CPU (user + system, /proc) over a round,
divided by its runs, is the CPU of a run's start; a first round warms up, unmeasured. The subjects:

- `seed`: the seed's Express backend (Node; `--seed-dir` with its node_modules), which
  looks at a run at once after creating it;
- `backend`: this backend as shipped (`gunicorn -c gunicorn.conf.py`, token auth, limits,
  SQLite, logs, metrics), `WAIT_STRATEGY=poll`, `POLL_FIRST_MS=1` (one look at once);
- `floor-wsgi`, `floor-flask`, `floor-seed`: bench/floor_app.py under gunicorn with the
  backend's worker class and counts: a bare WSGI answer, a Flask route, and a Flask route
  doing the seed's work with the backend's lean client (nothing else).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.overhead import post_json
from harness.servers import Child, accepts, start_gunicorn, tree, wait_until

SUBJECTS = ("seed", "floor-wsgi", "floor-flask", "floor-seed", "backend")
_FAKE_HEADERS = {"Authorization": "Bearer sk-bench", "OpenAI-Beta": "assistants=v2", "Content-Type": "application/json"}


def _assistants_threads(fake_port: int, count: int) -> list[str]:
    """Threads with one user message, made straight on the fake's Assistants API."""
    conn = http.client.HTTPConnection("127.0.0.1", fake_port)
    made = []
    for _ in range(count):
        conn.request("POST", "/v1/threads", json.dumps({}), _FAKE_HEADERS)
        thread = json.loads(conn.getresponse().read())["id"]
        message = {"role": "user", "content": "hi [fake duration=0]"}
        conn.request("POST", f"/v1/threads/{thread}/messages", json.dumps(message), _FAKE_HEADERS)
        conn.getresponse().read()
        made.append(thread)
    conn.close()
    return made


def backend_threads(port: int, tokens: list[str], count: int, content: str = "hi [fake duration=0]") -> list[str]:
    """Threads with one user message, made through the backend by its users in turn."""
    conn = http.client.HTTPConnection("127.0.0.1", port)
    made = []
    for i in range(count):
        token = tokens[i % len(tokens)]
        thread = post_json(conn, "/api/openai/threads", {}, token)["id"]
        post_json(conn, f"/api/openai/threads/{thread}/messages", {"role": "user", "content": content}, token)
        made.append(thread)
    conn.close()
    return made


def one_run(port: int, thread: str, body: dict, token: str | None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request("POST", f"/api/openai/threads/{thread}/runs", json.dumps(body), headers)
    answer = conn.getresponse()
    data = answer.read()
    conn.close()
    if answer.status != 200 or json.loads(data).get("status") != "completed":
        raise RuntimeError(f"run on {thread}: {answer.status} {data[:200]!r}")


def _rounds(root: int, port: int, threads: list[str], rounds: int, body: dict, tokens: list[str]) -> list[float]:
    """ms of the subject's CPU per run, for each of `rounds` rounds after one unmeasured round
    (Node's compiler, Python's caches and pools warm up in it)."""
    per_round = len(threads) // (rounds + 1)
    pids = tree(root)
    spent = []
    for r in range(rounds + 1):
        before = procs.cpu_seconds(pids)
        for i in range(r * per_round, (r + 1) * per_round):
            one_run(port, threads[i], body, tokens[i % len(tokens)] if tokens else None)
        spent.append((procs.cpu_seconds(pids) - before) / per_round * 1000)
        time.sleep(0.3)
    return spent[1:]


def _run_env(fake_port: int, work: Path, name: str) -> dict[str, str]:
    """The backend's environment for 0 s runs looked at once, on its own SQLite file."""
    env = procs.backend_env(fake_port, f"sqlite:///{work / (name + '.db')}", {"WAIT_STRATEGY": "poll"}, {})
    env["POLL_FIRST_MS"] = "1"
    return env


def start_backend(work: Path, fake_port: int, code: Path, name: str, count: int):
    """The backend of the tree `code` as shipped, and `count` threads made by its bench users:
    (gunicorn's child, its port, the users' tokens, the threads)."""
    env = _run_env(fake_port, work, name)
    procs.migrate(env, code)
    command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
    child, port = start_gunicorn(work, env, command=command, cwd=code, name=name)
    tokens = list(procs.bench_tokens(50).values())
    return child, port, tokens, backend_threads(port, tokens, count)


def _measure(subject: str, fake_port: int, runs: int, rounds: int, work: Path, seed_dir: Path | None) -> list[float]:
    count = runs * (rounds + 1)
    if subject == "seed":
        port = procs.free_port()
        env = {"PATH": os.environ["PATH"], "OPENAI_API_KEY": "sk-bench", "PORT": str(port), "HOST": "127.0.0.1"}
        env.update(OPENAI_BASE_URL=f"http://127.0.0.1:{fake_port}/v1", ASSISTANT_CURATOR_ID="asst_bench")
        child = Child(["node", "src/server.js"], work / "seed.log", env=env, cwd=seed_dir)
        try:
            wait_until(lambda: accepts(port), 30, "the seed to listen")
            threads = _assistants_threads(fake_port, count)
            return _rounds(child.pid, port, threads, rounds, {"assistant_type": "curator"}, [])
        finally:
            child.stop()
    if subject == "backend":
        child, port, tokens, threads = start_backend(work, fake_port, procs.ROOT, subject, count)
    else:
        env = _run_env(fake_port, work, subject)
        env["FLOOR_LEVEL"] = subject.removeprefix("floor-")
        command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "bench.floor_app:app"]
        child, port = start_gunicorn(work, env, command=command, name=subject)
        tokens = []
        threads = _assistants_threads(fake_port, count)
    try:
        return _rounds(child.pid, port, threads, rounds, {"assistant_type": "bench"}, tokens)
    finally:
        child.stop()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.start_cost", description=__doc__)
    parser.add_argument("--runs", type=int, default=500, help="runs per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--subjects", default=",".join(SUBJECTS), help=f"any of {', '.join(SUBJECTS)}")
    parser.add_argument("--seed-dir", type=Path, help="seed-express with its node_modules (for `seed`)")
    args = parser.parse_args(argv)
    subjects = args.subjects.split(",")
    if "seed" in subjects and not args.seed_dir:
        parser.error("the seed needs --seed-dir")
    work = Path(tempfile.mkdtemp(prefix="bench-start-"))
    fake_port = procs.free_port()
    fake = procs.start_fake(fake_port, "gevent", work)
    try:
        print(f"| subject | CPU per run, ms (median of {args.rounds} rounds of {args.runs}) | rounds |")
        print("|---|---|---|")
        for subject in subjects:
            spent = _measure(subject, fake_port, args.runs, args.rounds, work, args.seed_dir)
            rounds = ", ".join(f"{s:.2f}" for s in spent)
            print(f"| {subject} | {statistics.median(spent):.2f} | {rounds} |", flush=True)
    finally:
        fake.stop()


if __name__ == "__main__":
    main()

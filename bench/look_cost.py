"""`python -m bench.look_cost`: the CPU of a look at a waiting run inside the shipped backend, in steady state.

N runs of D seconds are started at once on the backend as shipped (`gunicorn -c
gunicorn.conf.py`, `WAIT_STRATEGY=poll`, token auth, limits, SQLite) against the
fake upstream (gunicorn + gevent, its own process); once every run is waiting, the
backend's process tree's CPU over a window of `--seconds` is divided by the looks
the fake upstream answered in it. Nothing else happens in the window, so the figure
is all a waiting run costs: the look itself, its timer and wake-up, the budget's
booking, the socket's waits, the garbage collector. Also printed: the share of
system time, and the process tree's context switches per look.
"""

from __future__ import annotations

import argparse
import json
import socket
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.fake import FakeControl
from bench.start_cost import backend_threads
from harness.servers import start_gunicorn, tree


def _ticks_and_switches(pids: list[int]) -> tuple[int, int, int]:
    """User and system clock ticks, and context switches, of these processes."""
    user = system = switches = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        user, system = user + int(fields[11]), system + int(fields[12])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    return user, system, switches


def _looks(control: FakeControl) -> int:
    return sum(n for route, n in control.stats()["requests"].items() if route.startswith("GET "))


def measure(runs: int, duration: float, seconds: float, env: dict[str, str]) -> dict:
    work = Path(tempfile.mkdtemp(prefix="bench-look-"))
    fake_port = procs.free_port()
    fake = procs.start_fake(fake_port, "gevent", work)
    control = FakeControl(fake_port)
    try:
        backend_env = procs.backend_env(fake_port, f"sqlite:///{work / 'backend.db'}", {"WAIT_STRATEGY": "poll"}, env)
        procs.migrate(backend_env)
        child, port = start_gunicorn(work, backend_env, name="backend")
        tokens = list(procs.bench_tokens(50).values())
        threads = backend_threads(port, tokens, runs, f"hi [fake duration={duration}]")
        pids = tree(child.pid)
        waiting = []
        body = json.dumps({"assistant_type": "bench"}).encode()
        for i, thread in enumerate(threads):
            conn = socket.create_connection(("127.0.0.1", port))
            head = (
                f"POST /api/openai/threads/{thread}/runs HTTP/1.1\r\nHost: bench\r\n"
                f"Authorization: Bearer {tokens[i % len(tokens)]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n\r\n"
            )
            conn.sendall(head.encode() + body)  # the answer is never read: the run only waits
            waiting.append(conn)
        time.sleep(4)  # every run started and looked at a few times
        looks, cpu, (user, system, switches) = _looks(control), procs.cpu_seconds(pids), _ticks_and_switches(pids)
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        looks = _looks(control) - looks
        cpu = procs.cpu_seconds(pids) - cpu
        user2, system2, switches2 = _ticks_and_switches(pids)
        for conn in waiting:
            conn.close()
        child.stop()
    finally:
        control.close()
        fake.stop()
    return {
        "runs": runs,
        "looks_per_second": looks / elapsed,
        "cpu_per_look_ms": cpu / max(looks, 1) * 1000,
        "cpu_share_of_a_core": cpu / elapsed,
        "system_share": (system2 - system) / max(1, user2 - user + system2 - system),
        "switches_per_look": (switches2 - switches) / max(looks, 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.look_cost", description=__doc__)
    parser.add_argument("--runs", default="1000,2000,3000", help="waiting runs, one measure each")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds each run lasts upstream")
    parser.add_argument("--seconds", type=float, default=8.0, help="the measured window")
    parser.add_argument("--env", action="append", default=[], help="extra backend environment, NAME=VALUE")
    args = parser.parse_args(argv)
    env = dict(item.split("=", 1) for item in args.env)
    print("| waiting runs | looks/s | CPU per look (ms) | backend CPU (of a core) | system time | switches per look |")
    print("|---|---|---|---|---|---|")
    for runs in (int(n) for n in args.runs.split(",")):
        m = measure(runs, args.duration, args.seconds, env)
        print(
            f"| {runs:,} | {m['looks_per_second']:.0f} | {m['cpu_per_look_ms']:.3f} | {m['cpu_share_of_a_core']:.0%} "
            f"| {m['system_share']:.0%} | {m['switches_per_look']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

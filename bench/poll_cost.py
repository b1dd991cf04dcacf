"""CPU per poll (`GET /v1/responses/{id}`) of this process: the SDK, the lean client, plain http.client.

    python -m bench.poll_cost [--n 2000] [--rounds 3]

The fake upstream runs in its own process (gunicorn, gevent worker, keep-alive), so its CPU is
not counted; only this process's CPU clock (time.process_time) is, not wall time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402
import openai  # noqa: E402

from app.engines.upstream_http import LIMITS, UpstreamHTTP  # noqa: E402

KEY = "sk-bench-poll-cost-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_fake(port: int, server: str = "gevent") -> subprocess.Popen:
    if server == "werkzeug":  # answers `Connection: close`: every call pays a new connection
        command = [
            sys.executable,
            "-m",
            "fake_openai",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--default-duration",
            "3600",
        ]
    else:  # keeps connections alive (bench/gunicorn_conf.py: keepalive 5 s); one worker holds the state
        command = [
            sys.executable,
            "-m",
            "gunicorn",
            "--no-control-socket",
            "-c",
            str(ROOT / "bench" / "gunicorn_conf.py"),
        ]
        command += [
            "-k",
            server,
            "-w",
            "1",
            "--worker-connections",
            "8000",
            "-b",
            f"127.0.0.1:{port}",
            f"fake_openai:create_fake_app(api_key={KEY!r}, default_duration=3600)",
        ]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the fake upstream did not start")


def _cpu_per_call(fn, n: int) -> float:
    for _ in range(50):
        fn()
    started = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - started) / n


def raw_stream_holder(client: httpx2.Client):
    """A `stream(method, path, params=, timeout=)` yielding lines, like the lean client's, on a bare client."""

    @contextlib.contextmanager
    def stream(method, path, params=None, timeout=None):
        with client.stream(method, path, params=params, timeout=timeout) as answer:
            yield (line for line in answer.iter_lines() if line)

    return stream


def _hold_streams(stream, path: str, count: int) -> threading.Event:
    """`count` threads, each holding an SSE stream of the (still running) response open; set the event to end them."""
    done, opened = threading.Event(), threading.Semaphore(0)

    def hold():
        try:
            with stream("GET", path, params={"stream": "true"}, timeout=60) as events:
                next(events)
                opened.release()
                done.wait()
        except Exception as exc:  # a failed stream must not hang the benchmark
            print(f"a held stream failed: {exc!r}", file=sys.stderr)
            opened.release()

    for _ in range(count):
        threading.Thread(target=hold, daemon=True).start()
    for _ in range(count):
        opened.acquire()
    return done


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=0, help="also measure with this many SSE streams held open")
    parser.add_argument("--server", default="gevent", help="gunicorn worker class serving the fake, or werkzeug")
    args = parser.parse_args(argv)

    port = _free_port()
    proc = _start_fake(port, args.server)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        lean = UpstreamHTTP(base, KEY)
        conversation, _ = lean.post("/conversations", {})
        body = {"model": "m", "conversation": conversation["id"], "input": [], "background": True, "store": True}
        response_id = lean.post("/responses", body)[0]["id"]
        path = f"/responses/{response_id}"

        sdk = openai.OpenAI(
            api_key=KEY,
            base_url=base,
            max_retries=0,
            timeout=httpx2.Timeout(2.0, connect=2.0),
            http_client=httpx2.Client(limits=httpx2.Limits(max_connections=None, max_keepalive_connections=32)),
        )
        raw = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, limits=LIMITS)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
        headers = {"Authorization": f"Bearer {KEY}", "Accept": "application/json"}

        def by_sdk():
            return sdk.responses.with_raw_response.retrieve(response_id).http_response.json()

        def by_lean():
            return lean.get(path, timeout=2.0)[0]

        def by_httpx2():
            return raw.get(path, timeout=2.0).json()

        def by_http_client():
            conn.request("GET", "/v1" + path, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(answer.status)
            return json.loads(data)

        cases = [
            ("openai SDK with_raw_response.retrieve + json", by_sdk),
            ("lean UpstreamHTTP.get", by_lean),
            ("bare httpx2.Client.get + json", by_httpx2),
            ("http.client keep-alive + json.loads", by_http_client),
        ]
        for _, fn in cases:
            assert fn()["id"] == response_id
        results = {name: [] for name, _ in cases}
        for _ in range(args.rounds):
            for name, fn in cases:
                results[name].append(_cpu_per_call(fn, args.n))
        if args.streams:
            k = args.streams
            n = max(1, args.n // 4)  # a stream open pays a new connection: fewer of them

            def lean_stream_open():
                with lean.stream("GET", path, params={"stream": "true"}, timeout=2.0) as events:
                    next(events)

            def raw_stream_open():
                with raw.stream("GET", path, params={"stream": "true"}, timeout=2.0) as answer:
                    next(answer.iter_lines())

            cases = [("lean stream open + 1 event + close", lean_stream_open, n)]
            cases.append(("bare httpx2 stream open + 1 line + close", raw_stream_open, n))
            base_rows = {name: [_cpu_per_call(fn, count) for _ in range(args.rounds)] for name, fn, count in cases}
            # The lean client's streams spread over its stream pools; the bare client holds all in one pool.
            held = [_hold_streams(lean.stream, path, k), _hold_streams(raw_stream_holder(raw), path, k)]
            cases += [
                (f"lean get, {k} lean streams open", by_lean, args.n),
                (f"lean stream open, {k} lean streams open", lean_stream_open, n),
                (f"bare httpx2 get, {k} streams open in its pool", by_httpx2, args.n),
                (f"bare httpx2 stream open, {k} streams open in its pool", raw_stream_open, n),
            ]
            for name, values in base_rows.items():
                results[name] = values
            for name, fn, count in cases[2:]:
                results[name] = [_cpu_per_call(fn, count) for _ in range(args.rounds)]
            for event in held:
                event.set()
        print(f"CPU per GET /v1/responses/{{id}}, this process only; N={args.n} calls x {args.rounds} rounds")
        print(
            f"python {sys.version.split()[0]}, openai {openai.__version__}, httpx2 {httpx2.__version__}, "
            f"fake upstream served by {args.server}"
        )
        print(f"{'client':56} {'median us':>10} {'min us':>8} {'max us':>8}")
        for name, values in results.items():
            us = [v * 1e6 for v in values]
            print(f"{name:56} {statistics.median(us):10.0f} {min(us):8.0f} {max(us):8.0f}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


if __name__ == "__main__":
    main()

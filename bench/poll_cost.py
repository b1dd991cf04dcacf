"""CPU per poll (`GET /v1/responses/{id}`) of this process: the SDK, the lean client, plain http.client.

    python -m bench.poll_cost [--n 2000] [--rounds 3]

The fake upstream runs in its own process (`python -m fake_openai`), so its CPU is
not counted; only this process's CPU clock (time.process_time) is, not wall time.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx2  # noqa: E402
import openai  # noqa: E402

from app.engines.upstream_http import UpstreamHTTP  # noqa: E402

KEY = "sk-bench-poll-cost-0123456789"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_fake(port: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "fake_openai", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--api-key", KEY, "--default-duration", "3600"]
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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    port = _free_port()
    proc = _start_fake(port)
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
        raw = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"})
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
        print(f"CPU per GET /v1/responses/{{id}}, this process only; N={args.n} calls x {args.rounds} rounds")
        print(
            f"python {sys.version.split()[0]}, openai {openai.__version__}, httpx2 {httpx2.__version__}, "
            f"pid {os.getpid()}, fake upstream: python -m fake_openai (werkzeug, threaded)"
        )
        print(f"{'client':48} {'median us':>10} {'min us':>8} {'max us':>8}")
        for name, values in results.items():
            us = [v * 1e6 for v in values]
            print(f"{name:48} {statistics.median(us):10.0f} {min(us):8.0f} {max(us):8.0f}")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()

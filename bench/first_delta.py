"""`python -m bench.first_delta`: the fake upstream's first text delta read straight from it.

The baseline of the streamed lag phase's `first_text_lag_ms` (bench/phases.py): the same
clock and the same formula for when the fake upstream wrote a reply's first word, but
read by a client of the upstream itself (Responses, `stream: true`), without the backend.
The backend's own share of a first delta's lag is the phase's figure minus this one.

    python -m bench.first_delta --runs 200 --concurrency 50
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import tempfile
import threading
import time
from pathlib import Path

from bench import procs
from bench.phases import _first_word_at
from bench.stats import summary_ms

TERMINAL = ("response.completed", "response.failed", "response.incomplete")


def one_run(port: int, duration: float) -> float:
    """Seconds from the fake's first word (by its schedule) to this client's first text delta."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": "gpt-4o", "input": f"hello [fake duration={duration}]", "stream": True, "background": True}
    conn.request(
        "POST",
        "/v1/responses",
        json.dumps(body),
        {"Content-Type": "application/json", "Authorization": "Bearer sk-bench"},
    )
    answer = conn.getresponse()
    response_id = first = None
    text = ""
    while line := answer.fp.readline():
        if not line.startswith(b"data:"):
            continue
        event = json.loads(line[5:])
        kind = event.get("type")
        if kind == "response.created":
            response_id = event["response"]["id"]
        elif kind == "response.output_text.delta" and first is None:
            first = time.time()
        elif kind == "response.output_text.done":
            text = event["text"]
        elif kind in TERMINAL:
            break
    conn.close()
    look = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    look.request("GET", f"/_fake/runs/{response_id}")
    info = json.loads(look.getresponse().read())
    look.close()
    return first - _first_word_at(info, text)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.first_delta", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    port = procs.free_port()
    fake = procs.start_fake(port, "gevent", Path(tempfile.mkdtemp(prefix="bench-first-delta-")))
    rng = random.Random(20260826)
    lags: list[float] = []
    try:
        for start in range(0, args.runs, args.concurrency):
            size = min(args.concurrency, args.runs - start)
            durations = [round(rng.uniform(1.0, 4.0), 2) for _ in range(size)]
            threads = [threading.Thread(target=lambda d=d: lags.append(one_run(port, d))) for d in durations]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        fake.stop()
    print(json.dumps({"first_text_lag_ms_direct": summary_ms(lags)}))


if __name__ == "__main__":
    main()

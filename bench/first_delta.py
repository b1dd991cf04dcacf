"""`python -m bench.first_delta`: the fake upstream's first text delta read straight from it.

The baseline of the streamed lag phase's `first_text_lag_ms` (bench/phases.py): the same
clock and the same formula for when the fake upstream wrote a reply's first word, but
read by a client of the upstream itself (Responses, `stream: true`), without the backend.
The backend's own share of a first delta's lag is the phase's figure minus this one.

    python -m bench.first_delta --runs 200 --concurrency 50
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.fake import FakeControl
from bench.load import Connection
from bench.phases import first_word_at
from bench.stats import summary_ms

TERMINAL = ("response.completed", "response.failed", "response.incomplete")


async def one_run(port: int, duration: float) -> tuple[str, float, str]:
    """(response ID, when this client read its first text delta, the reply's text), read with the
    load generator's own client (bench/load.py)."""
    body = {"model": "gpt-4o", "input": f"hello [fake duration={duration}]", "stream": True, "background": True}
    response_id, first, text = "", 0.0, ""
    async with Connection("127.0.0.1", port, "sk-bench") as client:
        async for _name, data in client.events("/v1/responses", body):
            kind = data.get("type") if isinstance(data, dict) else None
            if kind == "response.created":
                response_id = data["response"]["id"]
            elif kind == "response.output_text.delta" and not first:
                first = time.time()
            elif kind == "response.output_text.done":
                text = data["text"]
            elif kind in TERMINAL:
                break
    return response_id, first, text


async def _batch(port: int, durations: list[float]) -> list[tuple[str, float, str]]:
    return await asyncio.gather(*(one_run(port, d) for d in durations))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.first_delta", description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args(argv)
    port = procs.free_port()
    fake = procs.start_fake(port, "gevent", Path(tempfile.mkdtemp(prefix="bench-first-delta-")))
    control = FakeControl(port)
    rng = random.Random(20260826)
    lags: list[float] = []
    try:
        for start in range(0, args.runs, args.concurrency):
            size = min(args.concurrency, args.runs - start)
            durations = [round(rng.uniform(1.0, 4.0), 2) for _ in range(size)]
            for response_id, first, text in asyncio.run(_batch(port, durations)):
                lags.append(first - first_word_at(control.run_info(response_id), text))
    finally:
        control.close()
        fake.stop()
    print(json.dumps({"first_text_lag_ms_direct": summary_ms(lags)}))


if __name__ == "__main__":
    main()

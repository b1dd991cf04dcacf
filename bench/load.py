"""The load generator, run as its own process: `python -m bench.load SPEC.json OUT.json`.

Each run is the legacy frontend's flow on one keep-alive connection: create a
thread, add a user message that scripts the fake run's duration, then POST the
run and wait for the answer. The client never retries. The spec gives either a
concurrency (start the next run when one ends) or a launch offset per run.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time

import httpx2


class HttpError(Exception):
    """A step of the flow did not answer 200."""


def _client(spec: dict) -> httpx2.AsyncClient:
    """One keep-alive connection to the backend, used by one run's steps one after another."""
    return httpx2.AsyncClient(
        base_url=f"http://{spec['host']}:{spec['port']}",
        limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=None,  # the spec's timeout bounds the whole run
        headers={"Accept": "application/json"},
    )


async def _step(client: httpx2.AsyncClient, what: str, method: str, path: str, body: dict | None) -> dict:
    answer = await client.request(method, path, json=body)
    if answer.status_code != 200:
        raise HttpError(f"{what}: HTTP {answer.status_code} {answer.text[:200]}")
    return answer.json()


async def one_run(spec: dict, duration: float) -> dict:
    """Run the whole flow once; the record says when each step ended and how it went."""
    prefix = spec["prefix"]
    record: dict = {"duration": duration, "launched": time.time()}
    async with _client(spec) as client:
        await _flow(client, spec, prefix, duration, record)
    return record


async def _flow(client: httpx2.AsyncClient, spec: dict, prefix: str, duration: float, record: dict) -> None:
    try:
        thread = await _step(client, "thread", "POST", f"{prefix}/threads", {})
        record["thread_id"] = thread["id"]
        content = f"q [fake duration={duration:.3f}]"
        await _step(
            client, "message", "POST", f"{prefix}/threads/{thread['id']}/messages", {"role": "user", "content": content}
        )
        record["run_sent"] = time.time()
        response = await client.post(f"{prefix}/threads/{thread['id']}/runs", json={})
        record["done"] = time.time()  # the client has the whole answer now
        status = record["http_status"] = response.status_code
        answer = response.json()
        run = answer.get("run", answer)
        record["run_id"] = run.get("id")
        record["run_status"] = run.get("status")
        record["ok"] = status == 200 and run.get("status") == "completed"
        if not record["ok"]:
            record["error"] = f"run: HTTP {status} {answer.get('error', run.get('status'))}"
    except (OSError, httpx2.HTTPError, HttpError, ValueError, KeyError) as exc:
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]


async def _bounded(spec: dict, duration: float) -> dict:
    try:
        return await asyncio.wait_for(one_run(spec, duration), spec["timeout"])
    except TimeoutError:
        return {"duration": duration, "ok": False, "error": f"client timeout after {spec['timeout']}s"}


async def run_all(spec: dict) -> list[dict]:
    """Every run of the spec: `concurrency` at a time, or each at its `at` offset (seconds)."""
    runs = spec["runs"]
    if spec.get("concurrency"):
        gate = asyncio.Semaphore(spec["concurrency"])

        async def gated(duration: float) -> dict:
            async with gate:
                return await _bounded(spec, duration)

        return await asyncio.gather(*(gated(r["duration"]) for r in runs))

    start = time.monotonic()

    async def scheduled(run: dict) -> dict:
        await asyncio.sleep(max(0.0, start + run["at"] - time.monotonic()))
        return await _bounded(spec, run["duration"])

    return await asyncio.gather(*(scheduled(r) for r in runs))


def main(argv: list[str]) -> None:
    """Read the spec, run it, write the records and this process's CPU time."""
    spec_path, out_path = argv
    spec = json.loads(open(spec_path).read())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    started = time.time()
    records = asyncio.run(run_all(spec))
    times = os.times()
    out = {"records": records, "started": started, "ended": time.time(), "cpu_seconds": times.user + times.system}
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1:])

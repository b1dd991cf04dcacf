"""The load generator, run as its own process: `python -m bench.load SPEC.json OUT.json`.

Each run is the legacy frontend's flow on one keep-alive connection: create a
thread, add a user message that scripts the fake run's duration, then POST the
run and wait for the answer. The client never retries. The spec gives either a
concurrency (start the next run when one ends) or a launch offset per run.

A run with a `thread_id` starts at its POST .../runs: its thread and message were
made before (`python -m bench.load --prepare SPEC.json OUT.json` makes them for
every run of the spec, `concurrency` at a time, and writes the thread ids).
Each run speaks as one of the spec's `tokens`, in turn.
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


def _client(spec: dict, token: str | None) -> httpx2.AsyncClient:
    """One keep-alive connection to the backend, used by one run's steps one after another."""
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx2.AsyncClient(
        base_url=f"http://{spec['host']}:{spec['port']}",
        limits=httpx2.Limits(max_connections=1, max_keepalive_connections=1),
        timeout=None,  # the spec's timeout bounds the whole run
        headers=headers,
    )


async def _step(client: httpx2.AsyncClient, what: str, method: str, path: str, body: dict | None) -> dict:
    answer = await client.request(method, path, json=body)
    if answer.status_code != 200:
        raise HttpError(f"{what}: HTTP {answer.status_code} {answer.text[:200]}")
    return answer.json()


def _token(spec: dict, index: int) -> str | None:
    tokens = spec.get("tokens") or [None]
    return tokens[index % len(tokens)]


async def one_run(spec: dict, run: dict, index: int) -> dict:
    """Run the whole flow once (from the POST .../runs on a prepared thread); the record says
    when each step ended and how it went."""
    prefix = spec["prefix"]
    record: dict = {"duration": run["duration"], "launched": time.time()}
    async with _client(spec, _token(spec, index)) as client:
        await _flow(client, prefix, run, record)
    return record


async def _prepare(client: httpx2.AsyncClient, prefix: str, duration: float) -> str:
    thread = await _step(client, "thread", "POST", f"{prefix}/threads", {})
    content = f"q [fake duration={duration:.3f}]"
    body = {"role": "user", "content": content}
    await _step(client, "message", "POST", f"{prefix}/threads/{thread['id']}/messages", body)
    return thread["id"]


async def _flow(client: httpx2.AsyncClient, prefix: str, run: dict, record: dict) -> None:
    try:
        thread_id = run.get("thread_id") or await _prepare(client, prefix, run["duration"])
        record["thread_id"] = thread_id
        record["run_sent"] = time.time()
        response = await client.post(f"{prefix}/threads/{thread_id}/runs", json={})
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


async def _bounded(spec: dict, run: dict, index: int) -> dict:
    try:
        return await asyncio.wait_for(one_run(spec, run, index), spec["timeout"])
    except TimeoutError:
        return {"duration": run["duration"], "ok": False, "error": f"client timeout after {spec['timeout']}s"}


async def run_all(spec: dict) -> list[dict]:
    """Every run of the spec: `concurrency` at a time, or each at its `at` offset (seconds)."""
    runs = spec["runs"]
    if spec.get("concurrency"):
        gate = asyncio.Semaphore(spec["concurrency"])

        async def gated(run: dict, index: int) -> dict:
            async with gate:
                return await _bounded(spec, run, index)

        return await asyncio.gather(*(gated(r, i) for i, r in enumerate(runs)))

    start = time.monotonic()

    async def scheduled(run: dict, index: int) -> dict:
        await asyncio.sleep(max(0.0, start + run["at"] - time.monotonic()))
        return await _bounded(spec, run, index)

    return await asyncio.gather(*(scheduled(r, i) for i, r in enumerate(runs)))


async def prepare_all(spec: dict) -> list[str]:
    """A thread with its scripted message for every run of the spec, `concurrency` at a time."""
    gate = asyncio.Semaphore(spec.get("concurrency") or 50)

    async def one(run: dict, index: int) -> str:
        async with gate, _client(spec, _token(spec, index)) as client:
            return await _prepare(client, spec["prefix"], run["duration"])

    return await asyncio.gather(*(one(r, i) for i, r in enumerate(spec["runs"])))


def main(argv: list[str]) -> None:
    """Read the spec, run it (or prepare its threads), write the records and this process's CPU time."""
    prepare = argv[0] == "--prepare"
    spec_path, out_path = argv[1:] if prepare else argv
    spec = json.loads(open(spec_path).read())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if prepare:
        with open(out_path, "w") as f:
            json.dump(asyncio.run(prepare_all(spec)), f)
        return
    started = time.time()
    records = asyncio.run(run_all(spec))
    times = os.times()
    out = {"records": records, "started": started, "ended": time.time(), "cpu_seconds": times.user + times.system}
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1:])

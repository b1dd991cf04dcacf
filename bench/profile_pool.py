"""One poll's CPU by connection pool and by HTTP client: what a cheaper poll could cost.

httpcore2 checks every idle keep-alive connection of its pool (a poll() syscall
each) whenever it assigns a request, so a pool left large by a burst makes every
later request dearer. The lean clients show the floor: the same GET without the SDK.
"""

from __future__ import annotations

import http.client
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai

from bench.cputime import cpu_per_call

HEADERS = {"Authorization": "Bearer sk-bench"}


def pool_size(openai_client: openai.OpenAI) -> int:
    """Connections (idle or busy) in an SDK client's httpx2 pool; -1 when it can't be seen."""
    try:
        return len(openai_client._client._transport._pool.connections)
    except AttributeError:
        return -1


def fill_pool(poll, width: int) -> None:
    """`width` polls released at the same instant, so that the pool opens up to `width` connections."""
    gate = threading.Barrier(width)

    def one(_):
        gate.wait()
        poll()

    with ThreadPoolExecutor(width) as pool:
        list(pool.map(one, range(width)))


def compare(backend, thread_id: str, run_id: str, fake_port: int, calls: int, burst: int) -> list[tuple[str, float]]:
    """(what, CPU seconds per poll) for the app's engine before and after a burst, and the alternatives."""
    engine = backend.engine
    sdk = engine.responses._client

    def poll():
        return engine.get_run(thread_id, run_id)

    lines = [(f"app's engine.get_run, {pool_size(sdk)} connection(s) in the SDK pool", cpu_per_call(poll, calls))]
    fill_pool(poll, burst)
    lines.append((f"same, after {burst} polls at once left {pool_size(sdk)} in the pool", cpu_per_call(poll, calls)))
    capped = openai.OpenAI(
        api_key="sk-bench",
        base_url=f"http://127.0.0.1:{fake_port}/v1",
        max_retries=0,
        http_client=httpx2.Client(limits=httpx2.Limits(max_connections=None, max_keepalive_connections=16)),
    )
    capped_engine = type(engine)(capped)

    def capped_poll():
        return capped_engine.get_run(thread_id, run_id)

    fill_pool(capped_poll, burst)
    lines.append(
        (f"same burst, max_keepalive_connections=16 ({pool_size(capped)} kept)", cpu_per_call(capped_poll, calls))
    )

    raw = httpx2.Client(limits=httpx2.Limits(max_keepalive_connections=16))
    url = f"http://127.0.0.1:{fake_port}/v1/responses/{run_id}"
    lines.append(
        (
            "lean: httpx2 GET + json.loads",
            cpu_per_call(lambda: json.loads(raw.get(url, headers=HEADERS).content), calls),
        )
    )
    conn = http.client.HTTPConnection("127.0.0.1", fake_port)

    def stdlib_poll():
        conn.request("GET", f"/v1/responses/{run_id}", headers=HEADERS)
        return json.loads(conn.getresponse().read())

    lines.append(("lean: http.client GET + json.loads (one kept connection)", cpu_per_call(stdlib_poll, calls)))
    raw.close()
    conn.close()
    return lines

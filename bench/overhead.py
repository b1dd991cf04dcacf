"""Pass-through overhead: the same message list through the backend and straight from the fake upstream."""

from __future__ import annotations

import http.client
import json
import time

from bench.stats import percentile, summary_ms


def _timed_get(conn: http.client.HTTPConnection, path: str, headers: dict) -> float:
    started = time.perf_counter()
    conn.request("GET", path, headers=headers)
    answer = conn.getresponse()
    answer.read()
    elapsed = time.perf_counter() - started
    if answer.status != 200:
        raise RuntimeError(f"GET {path}: HTTP {answer.status}")
    return elapsed


def auth(token: str | None) -> dict:
    """The Authorization header of the benchmark's user, if any."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def post_json(conn: http.client.HTTPConnection, path: str, body: dict, token: str | None = None) -> dict:
    """POST a JSON body and return the JSON answer; anything but 200 raises."""
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json", **auth(token)})
    answer = conn.getresponse()
    data = answer.read()
    if answer.status != 200:
        raise RuntimeError(f"POST {path}: HTTP {answer.status} {data[:200]!r}")
    return json.loads(data)


def RESPONSES_ITEMS(thread_id: str) -> str:  # noqa: N802 - a constant of the measure
    """What the backend's responses engine asks the upstream for a thread's messages."""
    return f"/v1/conversations/{thread_id}/items?limit=100&order=desc"


def ASSISTANTS_MESSAGES(thread_id: str) -> str:  # noqa: N802
    """What an Assistants client (the seed) asks the upstream for a thread's messages."""
    return f"/v1/threads/{thread_id}/messages"


def measure(
    backend_port: int,
    fake_port: int,
    calls: int,
    token: str | None = None,
    warmup: int = 20,
    direct_path_of=RESPONSES_ITEMS,
) -> dict:
    """`calls` alternating GETs of a thread's messages, each side on its own keep-alive connection
    (http.client); through the backend as the user of `token`, and straight from the fake upstream
    at `direct_path_of(thread ID)`."""
    through = http.client.HTTPConnection("127.0.0.1", backend_port, timeout=30)
    direct = http.client.HTTPConnection("127.0.0.1", fake_port, timeout=30)
    thread = post_json(through, "/api/openai/threads", {}, token)
    for text in ("first question", "second question"):
        post_json(through, f"/api/openai/threads/{thread['id']}/messages", {"role": "user", "content": text}, token)
    # What the backend's responses engine asks the upstream for the same list.
    backend_path = f"/api/openai/threads/{thread['id']}/messages"
    direct_path = direct_path_of(thread["id"])
    direct_headers = {"Authorization": "Bearer sk-bench", "OpenAI-Beta": "assistants=v2"}
    times: dict[str, list[float]] = {"through": [], "direct": []}
    for i in range(warmup + calls):
        a = _timed_get(through, backend_path, auth(token))
        b = _timed_get(direct, direct_path, direct_headers)
        if i >= warmup:
            times["through"].append(a)
            times["direct"].append(b)
    through.close()
    direct.close()
    diffs = [a - b for a, b in zip(times["through"], times["direct"], strict=True)]
    return {
        "calls": calls,
        "through_ms": summary_ms(times["through"]),
        "direct_ms": summary_ms(times["direct"]),
        "p50_difference_ms": round((percentile(times["through"], 50) - percentile(times["direct"], 50)) * 1000, 2),
        "paired_difference_ms": summary_ms(diffs),
    }

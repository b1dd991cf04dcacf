"""The fake upstream's control API (/_fake), read over one keep-alive connection."""

from __future__ import annotations

import http.client
import json


class FakeControl:
    """Counters, run timings and reset of the fake upstream on 127.0.0.1:`port`."""

    def __init__(self, port: int):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def _call(self, method: str, path: str) -> dict:
        try:
            self.conn.request(method, path)
            answer = self.conn.getresponse()
        except (OSError, http.client.HTTPException):
            # The server may close an idle keep-alive connection; one fresh try.
            self.conn.close()
            self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.conn.request(method, path)
            answer = self.conn.getresponse()
        data = answer.read()
        if answer.status != 200:
            raise RuntimeError(f"fake upstream {method} {path}: HTTP {answer.status} {data[:200]!r}")
        return json.loads(data)

    def stats(self) -> dict:
        """Requests counted per route since the last reset."""
        return self._call("GET", "/_fake/stats")

    def reset(self) -> None:
        """Forget every thread, run and counter."""
        self._call("POST", "/_fake/reset")

    def run_info(self, run_id: str) -> dict:
        """`{status, final_at, created_at, polls}` of one upstream run (epoch seconds)."""
        return self._call("GET", f"/_fake/runs/{run_id}")

    def close(self) -> None:
        self.conn.close()


def request_delta(before: dict, after: dict) -> dict[str, int]:
    """Requests per route between two stats snapshots (routes with none left out)."""
    old, new = before["requests"], after["requests"]
    return {route: n - old.get(route, 0) for route, n in sorted(new.items()) if n - old.get(route, 0)}


# Upstream requests made while a run waits: its creation, every look at it, a cancel.
RUN_ROUTES = (
    "POST /v1/responses",
    "GET /v1/responses/{response_id}",
    "POST /v1/responses/{response_id}/cancel",
    "POST /v1/threads/{thread_id}/runs",
    "GET /v1/threads/{thread_id}/runs/{run_id}",
    "POST /v1/threads/{thread_id}/runs/{run_id}/cancel",
)
POLL_ROUTES = ("GET /v1/responses/{response_id}", "GET /v1/threads/{thread_id}/runs/{run_id}")

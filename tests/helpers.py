"""Helpers of the tests: the test users, a client per user, servers in threads, waiting and counting."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from werkzeug.serving import make_server

from harness.servers import wait_until

UPSTREAM_KEY = "sk-test-upstream-key-0123456789"
TOKENS = {"alice": "alice-token-0001", "bob": "bob-token-0002"}

# Upstream routes, as the fake counts them.
RUN_CREATE = {"assistants": "POST /v1/threads/{thread_id}/runs", "responses": "POST /v1/responses"}
# How long a run created behind the backend's back (`create_run_upstream`) may take to start.
CREATE_SECONDS = 10.0
RUN_GET = {"assistants": "GET /v1/threads/{thread_id}/runs/{run_id}", "responses": "GET /v1/responses/{response_id}"}


def upstream_calls(fake, *routes: str, writes_only: bool = False) -> int:
    """Requests the fake upstream has counted since its reset: on `routes` (all when none is given),
    and without the GETs when `writes_only`."""
    requests = fake.stats()["requests"]
    return sum(
        n
        for route, n in requests.items()
        if (not routes or route in routes) and not (writes_only and route.startswith("GET"))
    )


def create_run_upstream(engine, thread_id: str, assistant) -> dict:
    """A run started on the upstream engine directly, behind the backend's back (not waited on)."""
    return engine.start_run(thread_id, assistant, None, None, timeout=CREATE_SECONDS).run


class ServerThread:
    """A threaded WSGI server on a free loopback port, run in a background thread."""

    def __init__(self, wsgi_app):
        self.server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Api:
    """A test client that speaks as one user under one route prefix."""

    def __init__(self, flask_client, token, prefix="/api/openai"):
        self.client = flask_client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.prefix = prefix

    def as_user(self, user):
        return Api(self.client, TOKENS[user], self.prefix)

    def under(self, prefix):
        return Api(self.client, self.headers["Authorization"].split(" ", 1)[1], prefix)

    def _call(self, method, path, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.open(self.prefix + path, method=method, headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self._call("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self._call("POST", path, **kwargs)

    def delete(self, path, **kwargs):
        return self._call("DELETE", path, **kwargs)

    def new_thread(self):
        response = self.post("/threads", json={})
        assert response.status_code == 200, response.json
        return response.json["id"]

    def say(self, thread_id, text):
        response = self.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": text})
        assert response.status_code == 200, response.json
        return response.json

    def run(self, thread_id, **body):
        return self.post(f"/threads/{thread_id}/runs", json={"assistant_type": "curator", **body})


def started_run_id(app, thread_id, within=5.0, pending=None):
    """The run a waiting POST .../runs holds the thread with, once it has been created upstream.
    `pending`, the future of that POST, fails the wait early when it has already answered."""
    records = app.extensions["services"].records

    def holder():
        if pending is not None and pending.done():
            raise AssertionError(f"the run on {thread_id} answered before it was seen: {pending.result().json}")
        run_id = records.active_run(thread_id)
        return run_id if run_id and not run_id.startswith("starting-") else None

    return wait_until(holder, within, f"a run to start on {thread_id}")


@contextlib.contextmanager
def background_run(api, thread_id, **body):
    """POST .../runs in a background thread; yields (its future, the run's id) once the run has been
    created upstream and is being waited for. Leaving the block waits for the answer."""
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.run, thread_id, **body)
        yield pending, started_run_id(api.client.application, thread_id, pending=pending)


# --- tests of real processes (test_deploy) ---------------------------------------------------------------

DEPLOY_UPSTREAM_KEY = "sk-deploy-test-upstream-0123456789"
DEPLOY_TOKEN = "alice-deploy-token-0001"
# Variables of the developer's own environment that must not leak into a test server.
_OWN = (
    "OPENAI_",
    "ASSISTANT_",
    "RUN_",
    "AUTH_",
    "API_TOKENS",
    "JWT_",
    "DATABASE_URL",
    "PROMETHEUS_",
    "WORKER_THREADS",
    "MAX_INFLIGHT_RUNS",
    "RATELIMIT_",
    "EVENT_LOG_",
    "STREAM_REPLAY_",
    "WEB_",
    "GRACEFUL_TIMEOUT",
    "KEEPALIVE",
    "BIND",
    "HOST",
    "PORT",
    "FORWARDED_",
    "LOG_",
)


def call(method: str, url: str, body=None, headers=None, timeout: float = 60):
    """One HTTP request; returns (status, headers, parsed JSON or text), also for 4xx and 5xx."""
    data = None if body is None else json.dumps(body).encode() if not isinstance(body, bytes) else body
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer_headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, answer_headers, raw = error.code, error.headers, error.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, answer_headers, json.loads(text)
    except ValueError:
        return status, answer_headers, text


def gunicorn_env(upstream_url: str, database_url: str, **overrides) -> dict:
    """The environment of a test deployment; `overrides` add to it (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN)}
    env.update(
        OPENAI_API_KEY=DEPLOY_UPSTREAM_KEY,
        OPENAI_BASE_URL=f"{upstream_url}/v1",
        ASSISTANT_CURATOR_MODEL="gpt-4o",
        ASSISTANT_CURATOR_INSTRUCTIONS="You are a curator.",
        AUTH_MODE="token",
        API_TOKENS=f"alice:{DEPLOY_TOKEN}",
        DATABASE_URL=database_url,
        RATELIMIT_RUNS="off",
        RATELIMIT_DEFAULT="off",
        POLL_FIRST_MS="50",
        POLL_MAX_MS="200",
        UPSTREAM_TIMEOUT_SECONDS="2",
        FORWARDED_PROXIES="1",
        LOG_FORMAT="text",
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env

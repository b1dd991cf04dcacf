"""Creating a run inside the deadline: one attempt that may reach the upstream, never two.

The upstream is the fake behind a WSGI middleware on its own loopback server, which
makes calls slow or refuses one before the fake sees it.
"""

from __future__ import annotations

import re
import socket
import threading
import time

import pytest

from app.api.outcomes import outcome_of
from app.environment import CANCEL_GRACE_SECONDS
from tests.helpers import TOKENS, Api, ServerThread

CREATE = re.compile(r"^/v1/(responses|threads/[^/]+/runs)$")


def _is_create(environ) -> bool:
    return environ["REQUEST_METHOD"] == "POST" and bool(CREATE.match(environ["PATH_INFO"]))


class Upstream:
    """The fake behind a middleware: `delay` seconds before the calls `slow(environ)`
    picks, and a 429 (Retry-After: 0) in place of the first `refuse` creates."""

    def __init__(self, fake_app, delay=0.0, slow=lambda environ: True, refuse=0):
        self.app = fake_app
        self.delay = delay
        self.slow = slow
        self.refuse = refuse
        self.creates_seen = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        if _is_create(environ):
            with self.lock:
                self.creates_seen += 1
                refused = self.creates_seen <= self.refuse
            if refused:
                start_response("429 Too Many Requests", [("Content-Type", "application/json"), ("retry-after", "0")])
                return [b'{"error": {"message": "Rate limit reached.", "type": "requests", "code": "rate_limit"}}']
        if self.delay and self.slow(environ):
            time.sleep(self.delay)
        return self.app(environ, start_response)


@pytest.fixture
def upstream_behind(fake_server, fake, make_app):
    """An app whose upstream is the fake behind an `Upstream` middleware."""
    servers = []

    def build(middleware: Upstream, **settings):
        server = ServerThread(middleware)
        servers.append(server)
        app = make_app(OPENAI_BASE_URL=f"{server.url}/v1", **settings)
        return Api(app.test_client(), TOKENS["alice"]), app

    yield build
    for server in servers:
        server.stop()


def _runs_created_after(fake, seconds):
    time.sleep(seconds)  # a create the backend gave up on may still reach the fake
    return fake.stats()["runs_created"]


def test_with_every_upstream_call_slow_the_408_comes_inside_the_chain(upstream_behind, fake_server, fake):
    middleware = Upstream(fake_server.server.app, delay=1.0)
    api, _ = upstream_behind(middleware, RUN_TIMEOUT_SECONDS=2, UPSTREAM_TIMEOUT_SECONDS=1.5)
    thread = api.new_thread()
    api.say(thread, "think for ever [fake status=never]")
    started = time.monotonic()
    answer = api.run(thread)
    waited = time.monotonic() - started
    assert answer.status_code == 408, answer.json
    assert waited < 2 + CANCEL_GRACE_SECONDS
    assert middleware.creates_seen == 1
    assert _runs_created_after(fake, 1.0) == 1


def test_a_create_slower_than_the_time_left_is_504_and_keeps_the_thread_and_the_key(
    upstream_behind, fake_server, fake, engine_name
):
    middleware = Upstream(fake_server.server.app, delay=2.5, slow=_is_create)
    api, app = upstream_behind(middleware, RUN_TIMEOUT_SECONDS=2, UPSTREAM_TIMEOUT_SECONDS=1.5)
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.1]")
    key = {"Idempotency-Key": "slow-create"}
    started = time.monotonic()
    answer = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    waited = time.monotonic() - started
    assert answer.status_code == 504, answer.json
    assert answer.json["error"].startswith("The upstream did not confirm the run in time")
    assert answer.headers["x-should-retry"] == "false"
    assert 1.5 <= waited < 2.0  # the create's own timeout, inside the 2 s deadline
    again = api.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=key)
    assert again.status_code == 409 and "still being answered" in again.json["error"]
    other = api.run(thread)
    assert other.status_code == 409 and "active run" in other.json["error"]
    assert middleware.creates_seen == 1
    assert _runs_created_after(fake, 1.2) == 1


def test_a_create_refused_before_it_was_sent_is_tried_again_once(upstream_behind, fake_server, fake, engine_name):
    middleware = Upstream(fake_server.server.app, refuse=1)
    api, _ = upstream_behind(middleware)
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.1]")
    answer = api.run(thread)
    assert answer.status_code == 200 and answer.json["status"] == "completed"
    assert middleware.creates_seen == 2
    assert fake.stats()["runs_created"] == 1


def test_a_create_that_cannot_reach_the_upstream_is_retried_only_inside_the_deadline(make_app, fake, engine_name):
    reachable = Api(make_app().test_client(), TOKENS["alice"])
    thread = reachable.new_thread()
    reachable.say(thread, "hello [fake duration=0.1]")
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = Api(
        make_app(
            OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5
        ).test_client(),
        TOKENS["alice"],
    )
    started = time.monotonic()
    answer = unreachable.run(thread)
    assert answer.status_code == 503 and time.monotonic() - started < 1.0
    assert reachable.run(thread).status_code == 200  # nothing was sent: the thread was freed
    assert fake.stats()["runs_created"] == 1


def test_the_deadline_starts_when_the_request_arrives(app, api, engine_name):
    from app.runs import service
    from app.runs.service import RunRequest

    thread = api.new_thread()
    api.say(thread, "think for ever [fake status=never]")
    services = app.extensions["services"]
    started = time.monotonic()
    request = RunRequest("alice", thread, services.settings.assistant_types[0], None, None, arrived=started - 4.5)
    result = service.start_and_wait(services, request)
    outcome, error = outcome_of(result, services.settings.run_timeout_seconds)
    assert result.timed_out and outcome.http_status == 408 and error == "Run timeout exceeded 5 seconds"
    assert time.monotonic() - started < 2.0  # half a second of deadline left, and the cancel

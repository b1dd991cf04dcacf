"""The rate-limit store (a real redis-server) killed, then started again, and paused with SIGSTOP: every answer
arrives within a bound, as the RATELIMIT_FAIL policy says (open: passed, logged, counted; closed: a JSON 503
with Retry-After), /readyz tells which, and the limits count again once Redis is back."""

from __future__ import annotations

import signal
import time
from urllib.parse import urlparse

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.servers import start_redis
from tests.helpers import Api

# Well above RATELIMIT_STORAGE_TIMEOUT_SECONDS (0.3 s by default), far below any client's patience.
ANSWER_BOUND_SECONDS = 1.5


@pytest.fixture
def engine_name():
    """The limits are counted before any engine is asked: one engine is enough here."""
    return "responses"


@pytest.fixture
def redis(tmp_path):
    """A redis-server of this test's own, which the test may kill, start again or pause."""
    server = {}
    server["child"], server["url"] = start_redis(tmp_path)

    def restart():
        server["child"].stop()
        server["child"], _ = start_redis(tmp_path, port=urlparse(server["url"]).port)

    server["restart"] = restart
    server["apps"] = []
    yield server
    for app in server["apps"]:
        app.extensions["ratelimit"].close()
    server["child"].send(signal.SIGCONT)
    server["child"].stop()


def _metric(app, name: str, **labels) -> float:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def _timed(request):
    started = time.monotonic()
    answer = request()
    return answer, time.monotonic() - started


def _limited_app(make_app, redis, fail):
    app = make_app(RATELIMIT_DEFAULT="3/minute", RATELIMIT_STORAGE_URI=redis["url"], RATELIMIT_FAIL=fail)
    redis["apps"].append(app)
    return app, Api(app.test_client(), "alice-token-0001")


def test_failing_open_a_killed_redis_lets_calls_through_logged_and_counted(make_app, redis, capsys):
    app, alice = _limited_app(make_app, redis, "open")
    thread = alice.new_thread()
    assert alice.get(f"/threads/{thread}").status_code == 200
    redis["child"].stop(signal.SIGKILL)
    passed_before = _metric(app, "backend_ratelimit_store_errors_total", outcome="passed")
    capsys.readouterr()
    for _ in range(6):  # twice the limit: nothing counts them while Redis is gone
        answer, seconds = _timed(lambda: alice.get(f"/threads/{thread}"))
        assert answer.status_code == 200 and seconds < ANSWER_BOUND_SECONDS, (answer.json, seconds)
    warnings = [line for line in capsys.readouterr().err.splitlines() if " app.ratelimit " in line]
    assert len(warnings) == 1, warnings  # one line, not one per request
    assert "rate-limit store unavailable" in warnings[0] and "RATELIMIT_FAIL=open" in warnings[0]
    assert _metric(app, "backend_ratelimit_store_errors_total", outcome="passed") == passed_before + 6

    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200, ready.json
    assert "failing open" in ready.json["degraded"]["ratelimit"]

    redis["restart"]()
    time.sleep(1.1)  # the pause after a failure ends
    assert app.test_client().get("/readyz").status_code == 200
    statuses = [alice.get(f"/threads/{thread}").status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]  # counted again, from the empty store of the new server


def test_failing_closed_a_killed_redis_answers_503_json_and_readyz_names_it(make_app, redis):
    app, alice = _limited_app(make_app, redis, "closed")
    thread = alice.new_thread()
    redis["child"].stop(signal.SIGKILL)
    for client in (alice, alice.under("/v1")):
        answer, seconds = _timed(lambda c=client: c.get(f"/threads/{thread}"))
        assert answer.status_code == 503 and seconds < ANSWER_BOUND_SECONDS, (answer.json, seconds)
        assert answer.headers["Retry-After"] == "2"
    assert alice.get(f"/threads/{thread}").json == {"error": "The rate-limit store is unavailable; try again later."}
    error = alice.under("/v1").get(f"/threads/{thread}").json["error"]
    assert error["message"] == "The rate-limit store is unavailable; try again later."

    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.json["status"] == "unavailable" and set(ready.json["failing"]) == {"ratelimit"}
    assert app.test_client().get("/healthz").status_code == 200  # liveness stays separate

    redis["restart"]()
    time.sleep(1.6)  # the cached readiness answer and the pause after a failure end
    assert app.test_client().get("/readyz").status_code == 200
    assert alice.get(f"/threads/{thread}").status_code == 200


@pytest.mark.parametrize("fail,status", [("open", 200), ("closed", 503)])
def test_a_paused_redis_costs_each_call_at_most_its_timeout(make_app, redis, fail, status):
    app, alice = _limited_app(make_app, redis, fail)
    thread = alice.new_thread()
    redis["child"].send(signal.SIGSTOP)  # it still holds its port: connections open, nothing answers
    try:
        for _ in range(5):
            answer, seconds = _timed(lambda: alice.get(f"/threads/{thread}"))
            assert answer.status_code == status and seconds < ANSWER_BOUND_SECONDS, (answer.json, seconds)
        ready, seconds = _timed(lambda: app.test_client().get("/readyz"))
        assert seconds < ANSWER_BOUND_SECONDS
        assert ready.status_code == (200 if fail == "open" else 503), ready.json
    finally:
        redis["child"].send(signal.SIGCONT)
    time.sleep(1.6)
    assert app.test_client().get("/readyz").status_code == 200
    # Back, calls are counted again (the call that timed out may have been counted when Redis woke up).
    statuses = [alice.get(f"/threads/{thread}").status_code for _ in range(3)]
    assert statuses[0] == 200 and statuses[-1] == 429, statuses

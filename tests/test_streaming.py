"""WAIT_STRATEGY=stream: the wait blocks on the upstream's event stream, and falls back to polling."""

from __future__ import annotations

import time

import pytest

from tests.helpers import TOKENS, Api

STREAM_GET = "GET /v1/responses/{response_id}"


@pytest.fixture
def streaming_api(make_app):
    return Api(make_app(WAIT_STRATEGY="stream", POLL_FIRST_MS=200, POLL_MAX_MS=1000).test_client(), TOKENS["alice"])


@pytest.mark.parametrize("engine_name", ["responses"])
def test_a_streamed_run_answers_as_soon_as_it_ends_without_polls(streaming_api, fake):
    api = streaming_api
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.7]")
    answer = api.run(thread)
    received = time.time()
    assert answer.status_code == 200 and answer.json["status"] == "completed"
    assert received >= fake.run_info(answer.json["id"])["final_at"]
    assert fake.run_info(answer.json["id"])["polls"] == 0  # the stream told, no poll was needed
    reply = api.get(f"/threads/{thread}/messages?run_id={answer.json['id']}").json["data"]
    assert reply[0]["content"][0]["text"]["value"] == "Echo: hello"


@pytest.mark.parametrize("engine_name", ["responses"])
@pytest.mark.parametrize(
    "status,http", [("failed", 500), ("incomplete", 200), ("cancelled", 400), ("requires_action", 400)]
)
def test_every_final_status_arrives_through_the_stream(streaming_api, status, http):
    api = streaming_api
    thread = api.new_thread()
    api.say(thread, f"hello [fake status={status} duration=0.2]")
    answer = api.run(thread)
    assert answer.status_code == http
    assert (answer.json.get("runStatus") or answer.json["status"]) == status


@pytest.mark.parametrize("engine_name", ["responses"])
def test_the_deadline_holds_while_streaming(make_app):
    api = Api(
        make_app(WAIT_STRATEGY="stream", RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5).test_client(),
        TOKENS["alice"],
    )
    thread = api.new_thread()
    api.say(thread, "forever [fake status=never]")
    started = time.monotonic()
    answer = api.run(thread)
    assert answer.status_code == 408 and time.monotonic() - started < 3.0


@pytest.mark.parametrize("engine_name", ["responses"])
@pytest.mark.parametrize("mode", ["refuse", "drop"])
def test_a_refused_or_dropped_stream_falls_back(streaming_api, fake, mode):
    fake.config.stream_mode = mode
    api = streaming_api
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.4]")
    answer = api.run(thread)
    assert answer.status_code == 200 and answer.json["status"] == "completed"
    assert fake.stats()["requests"][STREAM_GET] >= 2  # the stream, then a look or a resumed stream


@pytest.mark.parametrize("engine_name", ["assistants"])
def test_the_assistants_engine_polls_instead(streaming_api, fake):
    api = streaming_api
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.3]")
    answer = api.run(thread)
    assert answer.status_code == 200
    assert fake.run_info(answer.json["id"])["polls"] >= 1


@pytest.mark.parametrize("engine_name", ["responses"])
def test_the_run_is_created_on_its_stream_at_about_two_upstream_calls(streaming_api, fake):
    api = streaming_api
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.3]")
    before = fake.stats()["requests"]
    answer = api.run(thread)
    assert answer.status_code == 200 and answer.json["status"] == "completed"
    after = fake.stats()["requests"]
    calls = {route: n - before.get(route, 0) for route, n in after.items() if n != before.get(route, 0)}
    assert calls == {"POST /v1/responses": 1}  # the create's own stream told the end: no GET at all


@pytest.mark.parametrize("engine_name", ["responses"])
def test_keepalive_frames_are_skipped(streaming_api, fake):
    fake.config.keepalive_seconds = 0.1
    api = streaming_api
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.6]")
    answer = api.run(thread)
    assert answer.status_code == 200 and answer.json["status"] == "completed"
    assert fake.run_info(answer.json["id"])["polls"] == 0

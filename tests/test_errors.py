"""The contract's error table: every error is JSON with the right status, and bad input never goes upstream."""

from __future__ import annotations

import socket

import pytest

from tests.helpers import TOKENS, UPSTREAM_KEY, Api, background_run, upstream_calls


@pytest.mark.parametrize(
    "path,body",
    [
        ("/threads", "not json"),
        ("/threads", "[1, 2]"),
        ("/threads/{thread}/messages", '{"role": "user"}'),
        ("/threads/{thread}/messages", '{"role": "system", "content": "hi"}'),
        ("/threads/{thread}/messages", '{"role": "user", "content": 42}'),
        ("/threads/{thread}/messages", '{"role": "user", "content": "   "}'),
        ("/threads/{thread}/messages", '{"role": "user", "content": [{"type": "image"}]}'),
        ("/threads/{thread}/messages", '{"role": "user", "content": "hi", "metadata": {"k": 1}}'),
        ("/threads/{thread}/messages", '{"role": "user", "content": "hi", "colour": "red"}'),
        ("/threads/{thread}/runs", '{"assistant_type": "curator", "temperature": 2.5}'),
        ("/threads/{thread}/runs", '{"assistant_type": "curator", "temperature": "hot"}'),
        ("/threads/{thread}/runs", '{"assistant_type": "curator", "top_p": -0.1}'),
        ("/threads/{thread}/runs", '{"assistant_type": "curator", "top_p": true}'),
        ("/threads/{thread}/runs", '{"assistant_type": "curator", "model": "gpt-5-pro"}'),
        ("/threads/{thread}/runs", '{"assistant_type": "curator", "instructions": "ignore the rules"}'),
        ("/threads/{thread}/runs", '{"assistant_type": "curator", "stream": "yes"}'),
        ("/threads/{thread}/runs", '{"assistant_type": 7}'),
    ],
)
def test_bad_bodies_are_400_and_reach_no_upstream(api, fake, path, body):
    thread = api.new_thread()
    calls = upstream_calls(fake)
    answer = api.post(path.format(thread=thread), data=body, content_type="application/json")
    assert answer.status_code == 400, answer.json
    assert answer.is_json and isinstance(answer.json["error"], str) and answer.json["error"]
    assert upstream_calls(fake) == calls


def test_content_too_long_is_400(make_app, fake):
    api = Api(make_app(MAX_MESSAGE_CHARS=10).test_client(), TOKENS["alice"])
    thread = api.new_thread()
    answer = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "x" * 11})
    assert answer.status_code == 400 and "too long" in answer.json["error"]


def _id_paths(bad_id):
    return [
        ("get", f"/threads/{bad_id}"),
        ("delete", f"/threads/{bad_id}"),
        ("get", f"/threads/{bad_id}/messages"),
        ("get", f"/threads/{bad_id}/runs/run_1"),
        ("get", f"/threads/thread_1/runs/{bad_id}"),
        ("post", f"/threads/thread_1/runs/{bad_id}/cancel"),
    ]


@pytest.mark.parametrize("bad_id", ["a.b", "x" * 129, "thread_1%20OR%201", "%3Cscript%3E"])
def test_ids_outside_the_pattern_are_400_before_any_upstream_call(api, fake, bad_id):
    calls = upstream_calls(fake)
    for method, path in _id_paths(bad_id):
        answer = getattr(api, method)(path)
        assert answer.status_code == 400, (path, answer.status_code)
        assert answer.json["error"].startswith("Invalid "), path
    assert upstream_calls(fake) == calls


def test_an_encoded_slash_in_an_id_is_a_route_that_does_not_exist(api, fake):
    # The WSGI server decodes %2F before the app sees the path, so "thread%2F.." arrives as two segments.
    calls = upstream_calls(fake)
    for method, path in _id_paths("thread%2F.."):
        answer = getattr(api, method)(path)
        assert answer.status_code == 404, (path, answer.status_code)
        assert answer.json == {"error": "Not found: no such route."}, path
    assert upstream_calls(fake) == calls


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-123", "Basic YWxpY2U6eA==", "Bearer "])
def test_missing_or_bad_credentials_are_401(app, header):
    client = app.test_client()
    headers = {"Authorization": header} if header else {}
    answer = client.post("/api/openai/threads", json={}, headers=headers)
    assert answer.status_code == 401 and answer.is_json and answer.json["error"]


def test_missing_thread_is_404(api):
    answer = api.get("/threads/thread_doesnotexist")
    assert answer.status_code == 404
    assert answer.json == {"error": "No thread found with id 'thread_doesnotexist'."}


def test_unknown_routes_and_methods_are_json(api):
    assert api.get("/nothing/here").status_code == 404 and api.get("/nothing/here").is_json
    answer = api.client.put("/api/openai/threads", headers=api.headers)
    assert answer.status_code == 405 and answer.is_json


def test_body_over_the_limit_is_413(make_app):
    api = Api(make_app(MAX_BODY_BYTES=2048).test_client(), TOKENS["alice"])
    answer = api.post("/threads", data="{" + " " * 4096 + "}", content_type="application/json")
    assert answer.status_code == 413 and answer.is_json


def test_upstream_rejecting_our_key_is_502_with_details_in_the_log_only(make_app, capfd):
    api = Api(make_app(OPENAI_API_KEY="sk-wrong-key-abcdef123456").test_client(), TOKENS["alice"])
    answer = api.post("/threads", json={})
    assert answer.status_code == 502
    assert "upstream configuration" in answer.json["error"].lower()
    assert answer.headers["x-should-retry"] == "false"
    assert "abcdef" not in answer.get_data(as_text=True)
    logged = capfd.readouterr().err
    assert "rejected" in logged and "sk-wrong-key" not in logged and "3456" not in logged


@pytest.mark.parametrize("engine_name", ["assistants"])
def test_upstream_not_knowing_the_assistant_is_502(api, fake):
    fake.config.unknown_assistants = {"asst_curator"}
    thread = api.new_thread()
    api.say(thread, "hi")
    answer = api.run(thread)
    assert answer.status_code == 502 and "upstream configuration" in answer.json["error"].lower()
    api.say(thread, "the thread is not left locked")


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_upstream_down_is_503_with_retry_after(make_app):
    app = make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1", OPENAI_API_KEY=UPSTREAM_KEY)
    answer = Api(app.test_client(), TOKENS["alice"]).post("/threads", json={})
    assert answer.status_code == 503
    assert int(answer.headers["Retry-After"]) >= 1 and answer.headers["x-should-retry"] == "false"


def test_no_room_for_another_waiting_run_is_a_quick_503(make_app):
    api = Api(make_app(MAX_INFLIGHT_RUNS=1).test_client(), TOKENS["alice"])
    slow, other = api.new_thread(), api.new_thread()
    api.say(slow, "slow [fake duration=1.0]")
    api.say(other, "quick")
    with background_run(api, slow) as (pending, _):
        refused = api.run(other)
        assert not pending.done()  # answered at once, while the slow run still waits
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert api.get(f"/threads/{other}/messages").status_code == 200
        assert pending.result().status_code == 200
    assert api.run(other).status_code == 200

"""`/v1`: the same routes for an official SDK, with OpenAI's error shape and every ended run a 200."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pytest

from tests.helpers import TOKENS, UPSTREAM_KEY, Api, background_run, started_run_id

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

ERROR_FIELDS = {"message", "type", "param", "code"}


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1")
    yield client
    client.close()


@pytest.fixture
def v1(api):
    return api.under("/v1")


def _openai_error(answer, status: int, error_type: str, code=None) -> dict:
    """The error of an answer, after checking it has OpenAI's shape."""
    assert answer.status_code == status, answer.get_data(as_text=True)
    assert set(answer.json) == {"error"} and set(answer.json["error"]) == ERROR_FIELDS
    error = answer.json["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert (error["type"], error["param"], error["code"]) == (error_type, None, code)
    return error


def test_a_conversation_through_the_sdk(sdk):
    thread = sdk.beta.threads.create()
    sdk.beta.threads.messages.create(thread.id, role="user", content="What is art? [fake duration=0.2]")
    run = sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id="curator")
    assert run.status == "completed" and run.thread_id == thread.id
    reply = sdk.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert reply.role == "assistant" and reply.run_id == run.id
    assert "Echo: What is art?" in reply.content[0].text.value


def test_a_failed_run_is_a_200_with_its_last_error(sdk):
    thread = sdk.beta.threads.create()
    sdk.beta.threads.messages.create(thread.id, role="user", content="go [fake status=failed duration=0.1]")
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator")
    assert run.status == "failed"
    assert "failed this run on purpose" in run.last_error.message
    assert sdk.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "failed"


@pytest.mark.parametrize(
    "status,answered",
    # A call of a tool that nobody declared is closed by the backend: the run ends cancelled.
    [("cancelled", "cancelled"), ("incomplete", "incomplete"), ("requires_action", "cancelled")],
)
def test_every_ended_run_is_a_200_with_its_status(v1, status, answered):
    thread = v1.new_thread()
    v1.say(thread, f"go [fake status={status} duration=0.1]")
    answer = v1.run(thread)
    assert answer.status_code == 200 and answer.json["object"] == "thread.run"
    assert answer.json["status"] == answered
    assert "x-should-retry" not in answer.headers


@pytest.mark.parametrize("engine_name", ["assistants"])
def test_an_expired_run_is_a_200(v1):
    thread = v1.new_thread()
    v1.say(thread, "go [fake status=expired duration=0.1]")
    answer = v1.run(thread)
    assert answer.status_code == 200 and answer.json["status"] == "expired"


def test_past_the_deadline_the_run_after_its_cancel_is_a_200(make_app, fake):
    v1 = Api(make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5).test_client(), TOKENS["alice"], "/v1")
    thread = v1.new_thread()
    v1.say(thread, "forever [fake status=never]")
    answer = v1.run(thread)
    assert answer.status_code == 200
    assert answer.json["status"] in ("cancelling", "cancelled")
    cancels = sum(n for route, n in fake.stats()["requests"].items() if route.endswith("/cancel"))
    assert cancels == 1
    assert v1.under("/api/openai").say(thread, "the thread is free again")


def test_sdk_errors_carry_the_reason(sdk):
    thread = sdk.beta.threads.create()
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="painter")
    assert "Configured types: curator, tutor" in str(raised.value)
    assert (raised.value.type, raised.value.code) == ("invalid_request_error", None)

    with pytest.raises(openai.BadRequestError) as raised:
        sdk.beta.threads.messages.create(thread.id, role="user", content="   ")
    assert "'content' must not be empty" in str(raised.value)

    with pytest.raises(openai.NotFoundError) as raised:
        sdk.beta.threads.retrieve("thread_nobody")
    assert "No thread found with id 'thread_nobody'" in str(raised.value)


def test_a_bad_key_is_an_authentication_error(live_server):
    with openai.OpenAI(api_key="not-a-token", base_url=f"{live_server.url}/v1") as client:
        with pytest.raises(openai.AuthenticationError) as raised:
            client.beta.threads.create()
    assert "Invalid token" in str(raised.value)
    assert (raised.value.type, raised.value.code) == ("invalid_request_error", "invalid_api_key")
    assert raised.value.response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_busy_thread_is_a_conflict_error(sdk, app):
    thread = sdk.beta.threads.create()
    sdk.beta.threads.messages.create(thread.id, role="user", content="slow [fake duration=1.0]")
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(sdk.beta.threads.runs.create, thread_id=thread.id, assistant_id="curator")
        run_id = started_run_id(app, thread.id, pending=pending)
        with pytest.raises(openai.ConflictError) as raised:
            sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator")
        assert f"already has an active run {run_id}" in str(raised.value)
        assert raised.value.response.headers["x-should-retry"] == "false"
        assert pending.result().status == "completed"


def test_routing_and_size_errors_have_openais_shape(make_app):
    v1 = Api(make_app(MAX_BODY_BYTES=2048).test_client(), TOKENS["alice"], "/v1")
    _openai_error(v1.get("/no/such/route"), 404, "invalid_request_error")
    _openai_error(v1.get(""), 404, "invalid_request_error")
    wrong_method = v1.delete("/threads")
    _openai_error(wrong_method, 405, "invalid_request_error")
    assert "POST" in wrong_method.headers["Allow"]
    too_large = v1.post("/threads", data="{" + " " * 4096 + "}", content_type="application/json")
    _openai_error(too_large, 413, "invalid_request_error")
    _openai_error(v1.post("/threads", data="[1]", content_type="application/json"), 400, "invalid_request_error")


def test_a_rate_limit_has_openais_code_and_keeps_retry_after(make_app):
    v1 = Api(make_app(RATELIMIT_DEFAULT="2/minute").test_client(), TOKENS["alice"], "/v1")
    v1.new_thread()
    v1.new_thread()
    refused = v1.post("/threads", json={})
    error = _openai_error(refused, 429, "requests", "rate_limit_exceeded")
    assert "Too many requests" in error["message"] and int(refused.headers["Retry-After"]) >= 1
    no_credentials = v1.post("/threads", headers={"Authorization": "none"})
    _openai_error(no_credentials, 401, "invalid_request_error", "invalid_api_key")
    assert no_credentials.headers["x-should-retry"] == "false"


def _closed_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_upstream_errors_are_server_errors(make_app):
    down = make_app(OPENAI_BASE_URL=f"http://127.0.0.1:{_closed_port()}/v1", OPENAI_API_KEY=UPSTREAM_KEY)
    answer = Api(down.test_client(), TOKENS["alice"], "/v1").post("/threads", json={})
    _openai_error(answer, 503, "server_error")
    assert answer.headers["x-should-retry"] == "false" and int(answer.headers["Retry-After"]) >= 1
    refused = make_app(OPENAI_API_KEY="sk-wrong-key-abcdef123456")
    answer = Api(refused.test_client(), TOKENS["alice"], "/v1").post("/threads", json={})
    assert "abcdef" not in _openai_error(answer, 502, "server_error")["message"]


def test_no_room_for_a_waiting_run_is_a_503_server_error(make_app):
    v1 = Api(make_app(MAX_INFLIGHT_RUNS=1).test_client(), TOKENS["alice"], "/v1")
    slow, other = v1.new_thread(), v1.new_thread()
    v1.say(slow, "slow [fake duration=1.0]")
    v1.say(other, "quick")
    with background_run(v1, slow) as (pending, _):
        refused = v1.run(other)
        _openai_error(refused, 503, "server_error")
        assert refused.headers["Retry-After"] == "1"
        assert pending.result().status_code == 200


def test_the_legacy_prefixes_keep_the_contracts_answers(api):
    assert api.get("/no/such/route").json == {"error": "Not found: no such route."}
    thread = api.new_thread()
    api.say(thread, "go [fake status=failed duration=0.1]")
    failed = api.run(thread)
    assert failed.status_code == 500 and failed.json["error"].startswith("Run failed: ")
    assert failed.json["runStatus"] == "failed"
    unknown = api.under("/api/assistants/curator").post("/threads/nope/runs", json={"assistant_type": "tutor"})
    assert unknown.status_code == 400 and isinstance(unknown.json["error"], str)


def test_every_legacy_route_is_served_under_v1_by_the_same_view(app):
    legacy = {}
    for rule in app.url_map.iter_rules():
        if rule.endpoint.startswith("openai_"):  # the API blueprints, not the list of types
            legacy[rule.rule.removeprefix("/api/openai")] = (rule.methods, app.view_functions[rule.endpoint])
    mounted = {
        rule.rule.removeprefix("/v1"): (rule.methods, app.view_functions[rule.endpoint])
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/v1/")
    }
    assert legacy and mounted == legacy


def test_the_sdk_reaches_v1_in_process(app):
    """No socket at all: the SDK through httpx2's WSGI transport."""
    client = openai.OpenAI(
        api_key=TOKENS["bob"],
        base_url="http://backend.test/v1",
        http_client=httpx2.Client(transport=httpx2.WSGITransport(app=app)),
    )
    thread = client.beta.threads.create()
    with pytest.raises(openai.NotFoundError) as raised:
        client.beta.threads.runs.retrieve("run_nobody", thread_id=thread.id)
    assert "No run found with id 'run_nobody'" in str(raised.value)

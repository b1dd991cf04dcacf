"""`POST .../runs` with `"stream": true`: Assistants v2 events, read by the official SDK and by hand."""

from __future__ import annotations

import json
import time
import typing
from concurrent.futures import ThreadPoolExecutor

import httpx2
import openai
import pytest
from openai.types.beta import AssistantStreamEvent

from app.contract import UpstreamRejected, UpstreamTransient
from app.runs import service as runs
from app.runs.errors import DeadlineBeforeStart
from harness.servers import wait_until
from tests.helpers import TOKENS, Api, ServerThread, background_run

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

EVENT_TYPES = tuple(typing.get_args(typing.get_args(AssistantStreamEvent)[0]))
STREAM_GET = "GET /v1/responses/{response_id}"


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/api/openai")
    yield client
    client.close()


def _thread_with(sdk, text):
    thread = sdk.beta.threads.create()
    sdk.beta.threads.messages.create(thread.id, role="user", content=text)
    return thread.id


def _stored_reply(sdk, thread_id, run_id):
    messages = sdk.beta.threads.messages.list(thread_id, run_id=run_id).data
    assert len(messages) == 1
    return messages[0]


def _text_of(events):
    return "".join(
        part.text.value for e in events if e.event == "thread.message.delta" for part in e.data.delta.content
    )


def _sse(url, thread_id, body=None, token=TOKENS["alice"]):
    """POST .../runs with stream: true by hand: (status, headers, [(name, data)]) and the raw text."""
    body = {"assistant_type": "curator", "stream": True, **(body or {})}
    headers = {"Authorization": f"Bearer {token}"}
    path = f"{url}/api/openai/threads/{thread_id}/runs"
    with httpx2.stream("POST", path, json=body, headers=headers, timeout=30) as r:
        if r.headers["content-type"].startswith("application/json"):
            r.read()
            return r.status_code, r.headers, r.json(), ""
        raw, events, name = "", [], None
        for line in r.iter_lines():
            raw += line + "\n"
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = line[len("data: ") :]
                events.append((name, data if data == "[DONE]" else json.loads(data)))
        return r.status_code, r.headers, events, raw


def test_the_sdk_stream_helper_reads_every_event(sdk, fake):
    thread_id = _thread_with(sdk, "tell me about art in five words [fake duration=0.6]")
    with sdk.beta.threads.runs.stream(thread_id=thread_id, assistant_id="curator") as stream:
        events = list(stream)
        run = stream.get_final_run()
        final_messages = stream.get_final_messages()
    assert all(isinstance(e, EVENT_TYPES) for e in events)
    names = [e.event for e in events]
    assert names[0] == "thread.run.created" and names[-1] == "thread.run.completed"
    assert "thread.run.in_progress" in names
    assert names.index("thread.message.created") < names.index("thread.message.delta")
    assert names.index("thread.message.completed") < names.index("thread.run.completed")
    assert run.status == "completed"
    stored = _stored_reply(sdk, thread_id, run.id)
    assert _text_of(events) == stored.content[0].text.value == "Echo: tell me about art in five words"
    assert [m.id for m in final_messages] == [stored.id]
    assert final_messages[0].content[0].text.value == stored.content[0].text.value


def test_create_with_stream_true_yields_typed_events(sdk):
    thread_id = _thread_with(sdk, "hello there [fake duration=0.3]")
    events = list(sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", stream=True))
    assert all(isinstance(e, EVENT_TYPES) for e in events)
    run = events[-1].data
    assert events[-1].event == "thread.run.completed" and run.status == "completed"
    created = next(e.data for e in events if e.event == "thread.run.created")
    assert created.id == run.id and created.thread_id == thread_id
    assert _text_of(events) == _stored_reply(sdk, thread_id, run.id).content[0].text.value


def test_the_wire_format(sdk, live_server):
    thread_id = _thread_with(sdk, "hello [fake duration=0.2]")
    status, headers, events, raw = _sse(live_server.url, thread_id)
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["x-accel-buffering"] == "no" and headers["cache-control"] == "no-cache"
    assert raw.endswith("event: done\ndata: [DONE]\n\n")
    assert events[-1] == ("done", "[DONE]")
    delta = next(data for name, data in events if name == "thread.message.delta")
    assert delta["object"] == "thread.message.delta" and delta["id"].startswith("msg_")
    part = delta["delta"]["content"][0]
    assert part["index"] == 0 and part["type"] == "text" and part["text"]["annotations"] == []
    assert part["text"]["value"].startswith("Echo:")


@pytest.mark.parametrize("engine_name", ["responses"])
def test_text_arrives_while_the_run_is_in_progress(sdk, fake):
    thread_id = _thread_with(sdk, "one two three four five six seven eight [fake duration=1.5]")
    seen = []
    with sdk.beta.threads.runs.stream(thread_id=thread_id, assistant_id="curator") as stream:
        for event in stream:
            seen.append((event.event, time.time()))
        run = stream.get_final_run()
    deltas = [at for name, at in seen if name == "thread.message.delta"]
    assert len(deltas) == 9  # one per word of "Echo: one two ... eight"
    final_at = fake.run_info(run.id)["final_at"]
    assert deltas[0] < final_at - 0.5  # the first words came long before the response ended
    assert deltas[-1] - deltas[0] > 0.5


@pytest.mark.parametrize("engine_name", ["responses"])
def test_a_blocking_run_read_from_the_upstreams_events_leaves_its_text_deltas_unparsed(make_app, monkeypatch):
    """WAIT_STRATEGY=stream: a client that waits for the JSON answer hears no text as it comes, so
    the deltas of a long reply are not parsed; a streamed answer's are."""
    from app.engines import upstream_http

    parsed = []
    real = upstream_http.json.loads

    class CountingJson:
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(data):
            event = real(data)
            parsed.append(event.get("type") if isinstance(event, dict) else None)
            return event

    monkeypatch.setattr(upstream_http, "json", CountingJson)
    api = Api(make_app(WAIT_STRATEGY="stream").test_client(), TOKENS["alice"])
    for stream in (False, True):
        parsed.clear()
        thread_id = api.new_thread()
        api.say(thread_id, "one two three four five six seven eight [fake duration=0.3]")
        answer = api.run(thread_id, stream=stream)
        assert answer.status_code == 200
        answer.get_data()  # a streamed answer is read to its end
        deltas = parsed.count("response.output_text.delta")
        assert "response.completed" in parsed
        assert deltas == (9 if stream else 0), parsed
        reply = api.get(f"/threads/{thread_id}/messages?limit=1").json["data"][0]["content"][0]["text"]["value"]
        assert reply == "Echo: one two three four five six seven eight"


@pytest.mark.parametrize("engine_name", ["assistants"])
def test_the_assistants_engine_sends_the_text_as_one_delta(sdk, fake):
    thread_id = _thread_with(sdk, "one two three [fake duration=0.3]")
    events = list(sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", stream=True))
    deltas = [e for e in events if e.event == "thread.message.delta"]
    assert len(deltas) == 1 and _text_of(events) == "Echo: one two three"
    assert fake.run_info(events[-1].data.id)["polls"] >= 1


@pytest.mark.parametrize("engine_name", ["responses"])
def test_a_dropped_upstream_stream_is_resumed_unnoticed(sdk, fake):
    fake.config.stream_mode = "drop"
    thread_id = _thread_with(sdk, "alpha beta gamma delta [fake duration=0.6]")
    events = list(sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", stream=True))
    assert events[-1].event == "thread.run.completed"
    assert _text_of(events) == "Echo: alpha beta gamma delta"
    assert fake.stats()["requests"][STREAM_GET] >= 3  # resumed after each dropped event


@pytest.mark.parametrize("engine_name", ["responses"])
def test_an_upstream_that_refuses_to_stream_is_polled_and_the_text_sent_at_the_end(sdk, fake):
    fake.config.stream_mode = "refuse"
    thread_id = _thread_with(sdk, "alpha beta [fake duration=0.3]")
    events = list(sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", stream=True))
    assert events[-1].event == "thread.run.completed"
    assert [e.event for e in events].count("thread.message.delta") == 1
    assert _text_of(events) == "Echo: alpha beta"
    assert fake.run_info(events[-1].data.id)["polls"] >= 1


@pytest.mark.parametrize(
    "script,final", [("failed", "failed"), ("incomplete", "incomplete"), ("cancelled", "cancelled")]
)
def test_each_final_status_is_the_last_run_event(sdk, live_server, script, final):
    thread_id = _thread_with(sdk, f"hello world [fake status={script} duration=0.3]")
    status, _, events, _ = _sse(live_server.url, thread_id)
    names = [name for name, _ in events]
    assert status == 200 and names[-2:] == [f"thread.run.{final}", "done"]
    run = events[-2][1]
    assert run["status"] == final
    if final == "failed":
        assert run["last_error"]["message"] == "The fake upstream failed this run on purpose."
    if final == "incomplete":
        assert "thread.message.completed" in names or "thread.message.incomplete" in names
    recorded = sdk.beta.threads.runs.retrieve(run["id"], thread_id=thread_id)
    assert recorded.status == final


def test_a_call_nobody_declared_ends_the_stream_cancelled(sdk, live_server):
    thread_id = _thread_with(sdk, "weather? [fake status=requires_action duration=0.2]")
    _, _, events, _ = _sse(live_server.url, thread_id)
    name, run = events[-2]
    assert name == "thread.run.cancelled" and run["required_action"] is None  # its calls were closed
    status, _, answer = _json_run(live_server.url, thread_id, "hello again [fake duration=0.1]")
    assert status == 200 and answer["status"] == "completed"  # the thread was left usable


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_client_tools_stream_through_the_sdk_with_submit_tool_outputs_stream(make_app):
    app = make_app(ASSISTANT_CURATOR_TOOLS="tests.tool_handlers:add")
    server = ServerThread(app)
    sdk = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{server.url}/api/openai")
    try:
        text = 'w [fake call=add args={"a": 1, "b": 2} call=get_weather args={"city": "Oslo"} duration=0.3]'
        thread_id = _thread_with(sdk, text)
        with sdk.beta.threads.runs.stream(thread_id=thread_id, assistant_id="curator", tools=[WEATHER]) as stream:
            events = list(stream)
        assert all(isinstance(e, EVENT_TYPES) for e in events)
        assert events[0].event == "thread.run.created" and events[-1].event == "thread.run.requires_action"
        run = events[-1].data
        calls = run.required_action.submit_tool_outputs.tool_calls
        assert [c.function.name for c in calls] == ["get_weather"]  # add ran on the server
        outputs = [{"tool_call_id": calls[0].id, "output": "sunny"}]
        with sdk.beta.threads.runs.submit_tool_outputs_stream(
            run_id=run.id, thread_id=thread_id, tool_outputs=outputs
        ) as stream:
            rest = list(stream)
        assert all(isinstance(e, EVENT_TYPES) for e in rest)
        assert "thread.run.created" not in [e.event for e in rest]
        assert rest[-1].event == "thread.run.completed" and rest[-1].data.id == run.id
        reply = _stored_reply(sdk, thread_id, run.id)
        assert _text_of(rest) == reply.content[0].text.value
        assert "add -> 3" in reply.content[0].text.value and "get_weather -> sunny" in reply.content[0].text.value
    finally:
        sdk.close()
        server.stop()


def _json_run(url, thread_id, text):
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    base = f"{url}/api/openai/threads/{thread_id}"
    httpx2.post(f"{base}/messages", json={"role": "user", "content": text}, headers=headers)
    answer = httpx2.post(f"{base}/runs", json={"assistant_type": "curator"}, headers=headers, timeout=30)
    return answer.status_code, answer.headers, answer.json()


# --- before the first byte: the usual JSON errors ---------------------------------------------------------


def test_checks_answer_json_before_any_event(api, live_server):
    thread_id = api.new_thread()
    api.say(thread_id, "hello")
    url = live_server.url
    assert _sse(url, thread_id, token="wrong")[0] == 401
    status, _, body, _ = _sse(url, thread_id, {"assistant_type": "painter"})
    assert status == 400 and "painter" in body["error"]
    status, _, body, _ = _sse(url, thread_id, {"stream": "yes"})
    assert status == 400 and "stream" in body["error"]
    assert _sse(url, "thread_unknown")[0] == 404
    assert _sse(url, thread_id, token=TOKENS["bob"])[0] == 404


def test_a_busy_thread_is_a_409_not_a_stream(api, live_server):
    thread_id = api.new_thread()
    api.say(thread_id, "long [fake duration=1.0]")
    with background_run(api, thread_id) as (pending, _run_id):
        status, headers, body, _ = _sse(live_server.url, thread_id)
        assert status == 409 and headers["x-should-retry"] == "false" and "error" in body
    assert pending.result().status_code == 200


def test_the_creation_failures_answer_as_when_blocking(api, app, live_server, monkeypatch):
    engine = app.extensions["services"].engine
    thread_id = api.new_thread()
    api.say(thread_id, "hello")

    def unconfirmed(*args, **kwargs):
        error = UpstreamTransient("create run: read timeout")
        error.maybe_sent = True
        raise error

    monkeypatch.setattr(engine, "start_run", unconfirmed)
    status, headers, body, _ = _sse(live_server.url, thread_id)
    assert status == 504 and headers["x-should-retry"] == "false" and "did not confirm" in body["error"]


def test_a_deadline_passed_before_the_creation_is_the_usual_408(api, live_server, monkeypatch):
    thread_id = api.new_thread()
    api.say(thread_id, "hello")

    def too_late(*args, **kwargs):
        raise DeadlineBeforeStart()

    monkeypatch.setattr(runs, "start_and_wait", too_late)
    status, headers, body, _ = _sse(live_server.url, thread_id)
    assert status == 408 and headers["x-should-retry"] == "false"
    assert body["error"] == "Run timeout exceeded 5 seconds"


@pytest.mark.parametrize("engine_name", ["responses"])
def test_past_capacity_a_stream_is_a_503_and_holds_its_place_to_the_end(make_app, fake):
    app = make_app(MAX_INFLIGHT_RUNS=1)
    api = Api(app.test_client(), TOKENS["alice"])
    server = ServerThread(app)
    capacity = app.extensions["services"].capacity
    try:
        first, second = api.new_thread(), api.new_thread()
        api.say(first, "slow [fake duration=1.0]")
        api.say(second, "hello")
        with ThreadPoolExecutor(1) as pool:
            streaming = pool.submit(_sse, server.url, first)
            wait_until(lambda: capacity.inflight == 1, 5, "the stream to take the place")
            status, headers, body, _ = _sse(server.url, second)
            assert status == 503 and headers["retry-after"] == "1" and "room" in body["error"]
            assert streaming.result()[2][-2][0] == "thread.run.completed"
        assert capacity.inflight == 0
    finally:
        server.stop()


# --- after the first byte: every ending is an event -------------------------------------------------------


@pytest.mark.parametrize("engine_name", ["responses"])
def test_the_deadline_ends_the_stream_with_the_cancelled_run(make_app):
    app = make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5)
    api = Api(app.test_client(), TOKENS["alice"])
    thread_id = api.new_thread()
    api.say(thread_id, "forever [fake status=never]")
    started = time.monotonic()
    answer = api.run(thread_id, stream=True)
    text = answer.get_data(as_text=True)
    assert time.monotonic() - started < 3.0
    assert "event: thread.run.cancelled\n" in text and text.endswith("event: done\ndata: [DONE]\n\n")
    assert app.extensions["services"].records.active_run(thread_id) is None


@pytest.mark.parametrize("engine_name", ["responses"])
def test_without_the_cancel_the_deadline_is_an_error_event(make_app):
    app = make_app(RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.5, RUN_CANCEL_ON_TIMEOUT="false")
    api = Api(app.test_client(), TOKENS["alice"])
    thread_id = api.new_thread()
    api.say(thread_id, "forever [fake status=never]")
    frames = api.run(thread_id, stream=True).get_data(as_text=True).split("\n\n")
    ids = [int(f.split("\n", 1)[0].removeprefix("id: ")) for f in frames[:-1]]
    assert ids == list(range(1, len(frames)))  # every event numbered, in order
    frames = [f.split("\n", 1)[-1] for f in frames]
    assert frames[-3:] == [
        'event: error\ndata: {"error":{"message":"Run timeout exceeded 1 seconds","type":"server_error",'
        '"code":"run_timeout","param":null}}',
        "event: done\ndata: [DONE]",
        "",
    ]


@pytest.mark.parametrize("engine_name", ["assistants"])
def test_an_upstream_outage_mid_stream_is_an_error_event(api, app, sdk, monkeypatch):
    engine = app.extensions["services"].engine
    thread_id = _thread_with(sdk, "hello [fake duration=0.5]")

    def refused(*args, **kwargs):
        raise UpstreamRejected("retrieve run: the upstream refused", status=400)

    monkeypatch.setattr(engine, "get_run", refused)
    stream = sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", stream=True)
    with pytest.raises(openai.APIError) as raised:
        list(stream)
    assert "refused" in str(raised.value)
    assert app.extensions["services"].records.active_run(thread_id) is None  # the thread is free again


def test_a_client_that_goes_away_leaves_the_run_to_end_and_be_recorded(app, sdk, live_server):
    thread_id = _thread_with(sdk, "bye now [fake duration=0.8]")
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    body = {"assistant_type": "curator", "stream": True}
    url = f"{live_server.url}/api/openai/threads/{thread_id}/runs"
    with httpx2.stream("POST", url, json=body, headers=headers, timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"thread.run"' in line:
                run_id = json.loads(line[len("data: ") :])["id"]
                break
    records = app.extensions["services"].records
    wait_until(lambda: records.run(run_id) and records.run(run_id).final, 5, "the run to be recorded")
    assert records.run(run_id).run["status"] == "completed"
    assert records.active_run(thread_id) is None
    assert _stored_reply(sdk, thread_id, run_id).content[0].text.value == "Echo: bye now"
    wait_until(lambda: app.extensions["services"].capacity.inflight == 0, 5, "the place to be given back")


def test_a_repeated_idempotency_key_of_a_stream_does_not_start_a_second_run(api, fake, engine_name):
    thread_id = api.new_thread()
    api.say(thread_id, "hello [fake duration=0.1]")
    key = {"Idempotency-Key": "stream-once"}
    first = api.post(f"/threads/{thread_id}/runs", json={"assistant_type": "curator", "stream": True}, headers=key)
    assert "event: thread.run.completed" in first.get_data(as_text=True)
    again = api.post(f"/threads/{thread_id}/runs", json={"assistant_type": "curator", "stream": True}, headers=key)
    assert again.status_code == 409 and "stream" in again.json["error"]
    assert fake.stats()["runs_created"] == 1

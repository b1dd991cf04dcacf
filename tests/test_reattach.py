"""Streams a client can reattach to: every event of a streamed run has an `id:`, and
`GET .../runs/{run_id}/events` replays the events after the client's last one, then follows
the live ones, to `done`, from the process's own log or from Redis shared by two apps."""

from __future__ import annotations

import json
import threading
import time

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.environment import ConfigError
from app.event_log import LoggedEvent, MemoryEventLog, Stream
from app.settings import load_settings
from harness.servers import start_redis
from tests.helpers import TOKENS, ServerThread

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

SLOW_REPLY = "one two three four five six seven eight nine ten eleven twelve [fake duration=1.5]"


@pytest.fixture
def engine_name():
    """The upstream's own deltas (responses engine) are what a client can be cut off in the middle of."""
    return "responses"


def _headers(user="alice", **more):
    return {"Authorization": f"Bearer {TOKENS[user]}", **more}


def _new_thread(url, text, prefix="/api/openai"):
    thread = httpx2.post(f"{url}{prefix}/threads", json={}, headers=_headers()).json()
    httpx2.post(
        f"{url}{prefix}/threads/{thread['id']}/messages", json={"role": "user", "content": text}, headers=_headers()
    )
    return thread["id"]


def _events(lines):
    """(id, name, data) of each server-sent event read from `lines`, as they come."""
    event_id, name = None, None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            yield event_id, name, data if data == "[DONE]" else json.loads(data)
            event_id, name = None, None


def _text(events):
    return "".join(
        part["text"]["value"]
        for _, name, data in events
        if name == "thread.message.delta"
        for part in data["delta"]["content"]
    )


def _cut_stream(url, thread_id, deltas=2, prefix="/api/openai"):
    """Start a streamed run and drop the connection after its first `deltas` deltas: (run id, events read)."""
    body = {"assistant_type": "curator", "stream": True}
    seen = []
    with httpx2.stream(
        "POST", f"{url}{prefix}/threads/{thread_id}/runs", json=body, headers=_headers(), timeout=30
    ) as r:
        assert r.status_code == 200
        for event in _events(r.iter_lines()):
            seen.append(event)
            if sum(1 for _, name, _ in seen if name == "thread.message.delta") == deltas:
                break
    run_id = seen[0][2]["id"]
    return run_id, seen


def _reattach(url, thread_id, run_id, after=None, header=True, user="alice", prefix="/api/openai"):
    """GET .../events: (status, events or JSON)."""
    path = f"{url}{prefix}/threads/{thread_id}/runs/{run_id}/events"
    headers, params = _headers(user), {}
    if after is not None and header:
        headers["Last-Event-ID"] = str(after)
    elif after is not None:
        params["after"] = str(after)
    with httpx2.stream("GET", path, headers=headers, params=params, timeout=30) as r:
        if not r.headers.get("content-type", "").startswith("text/event-stream"):
            r.read()
            return r.status_code, (r.json() if r.content else None)
        return r.status_code, list(_events(r.iter_lines()))


def _stored_reply(url, thread_id, run_id, prefix="/api/openai"):
    messages = httpx2.get(
        f"{url}{prefix}/threads/{thread_id}/messages", params={"run_id": run_id}, headers=_headers()
    ).json()["data"]
    assert len(messages) == 1
    return messages[0]["content"][0]["text"]["value"]


@pytest.mark.parametrize("header", [True, False], ids=["Last-Event-ID", "after"])
def test_a_stream_cut_after_its_first_deltas_is_read_to_its_end_without_a_gap_or_a_repeat(live_server, header):
    thread_id = _new_thread(live_server.url, SLOW_REPLY)
    run_id, seen = _cut_stream(live_server.url, thread_id)
    assert [event_id for event_id, _, _ in seen] == list(range(1, len(seen) + 1))
    status, rest = _reattach(live_server.url, thread_id, run_id, after=seen[-1][0], header=header)
    assert status == 200
    assert [event_id for event_id, _, _ in rest] == list(range(len(seen) + 1, len(seen) + len(rest) + 1))
    assert rest[-1][1:] == ("done", "[DONE]") and rest[-2][1] == "thread.run.completed"
    assert _text(seen) and _text(rest)  # cut in the middle of the text
    assert _text(seen) + _text(rest) == _stored_reply(live_server.url, thread_id, run_id)


def test_without_an_id_the_whole_stream_is_replayed_after_the_run_ended(live_server):
    thread_id = _new_thread(live_server.url, "hello there [fake duration=0.2]")
    run_id, seen = _cut_stream(live_server.url, thread_id, deltas=1)
    time.sleep(1.0)
    status, replay = _reattach(live_server.url, thread_id, run_id)
    assert status == 200
    assert replay[: len(seen)] == seen
    assert [event_id for event_id, _, _ in replay] == list(range(1, len(replay) + 1))
    assert _text(replay) == _stored_reply(live_server.url, thread_id, run_id)
    status, nothing = _reattach(live_server.url, thread_id, run_id, after=replay[-1][0])
    assert status == 204 and nothing is None  # the client has it all


def test_only_the_owner_reattaches_and_bad_ids_are_refused(live_server):
    thread_id = _new_thread(live_server.url, "hello [fake duration=0.2]")
    run_id, _ = _cut_stream(live_server.url, thread_id, deltas=1)
    status, body = _reattach(live_server.url, thread_id, run_id, user="bob")
    assert status == 404 and "thread" in body["error"]
    status, body = _reattach(live_server.url, thread_id, "resp_" + "0" * 48)
    assert status == 404 and "run" in body["error"]
    status, body = _reattach(live_server.url, thread_id, run_id, after="x1")
    assert status == 400 and "Last-Event-ID" in body["error"]


def test_a_finished_stream_is_replayed_for_stream_replay_seconds_then_410(make_app):
    server = ServerThread(make_app(STREAM_REPLAY_SECONDS="1"))
    try:
        thread_id = _new_thread(server.url, "hello [fake duration=0.2]")
        run_id, _ = _cut_stream(server.url, thread_id, deltas=1)
        time.sleep(0.6)
        assert _reattach(server.url, thread_id, run_id)[0] == 200
        time.sleep(1.2)
        status, body = _reattach(server.url, thread_id, run_id)
        assert status == 410 and "no longer kept" in body["error"]
    finally:
        server.stop()


@pytest.mark.parametrize("prefix", ["/v1", "/api/assistants/curator"])
def test_the_route_lives_under_every_prefix(live_server, prefix):
    thread_id = _new_thread(live_server.url, SLOW_REPLY, prefix=prefix)
    run_id, seen = _cut_stream(live_server.url, thread_id, prefix=prefix)
    status, rest = _reattach(live_server.url, thread_id, run_id, after=seen[-1][0], prefix=prefix)
    assert status == 200
    assert _text(seen) + _text(rest) == _stored_reply(live_server.url, thread_id, run_id, prefix=prefix)


def test_the_sdk_reads_numbered_events_as_before(live_server):
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1")
    try:
        thread = client.beta.threads.create()
        client.beta.threads.messages.create(thread.id, role="user", content="hello sdk [fake duration=0.3]")
        with client.beta.threads.runs.stream(thread_id=thread.id, assistant_id="curator") as stream:
            events = list(stream)
            run = stream.get_final_run()
        assert run.status == "completed" and events[-1].event == "thread.run.completed"
        text = "".join(p.text.value for e in events if e.event == "thread.message.delta" for p in e.data.delta.content)
        assert text == _stored_reply(live_server.url, thread.id, run.id)
    finally:
        client.close()


@pytest.fixture
def redis_log(tmp_path, make_app):
    """Two apps (two instances) sharing the database and a real Redis as their event log."""
    child, url = start_redis(tmp_path)
    apps = [make_app(EVENT_LOG_URL=url) for _ in range(2)]
    servers = [ServerThread(app) for app in apps]
    yield {"child": child, "url": url, "apps": apps, "servers": servers}
    for server in servers:
        server.stop()
    for app in apps:
        app.extensions["event_log"].close()
    child.stop()


def test_a_stream_cut_on_one_instance_is_read_to_its_end_on_another(redis_log):
    first, second = redis_log["servers"]
    thread_id = _new_thread(first.url, SLOW_REPLY)
    run_id, seen = _cut_stream(first.url, thread_id)
    status, rest = _reattach(second.url, thread_id, run_id, after=seen[-1][0])
    assert status == 200 and rest[-1][1] == "done"
    assert [event_id for event_id, _, _ in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    assert _text(seen) + _text(rest) == _stored_reply(second.url, thread_id, run_id)
    assert _reattach(second.url, thread_id, run_id, user="bob")[0] == 404


def _metric(app, name, **labels):
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0


def test_without_redis_the_run_streams_to_its_client_and_a_reattach_is_a_503(redis_log):
    first, _ = redis_log["servers"]
    app = redis_log["apps"][0]
    redis_log["child"].stop()
    before = _metric(app, "backend_event_log_errors_total", operation="publish")
    thread_id = _new_thread(first.url, "hello without redis [fake duration=0.3]")
    started = time.monotonic()
    run_id, seen = _cut_stream(first.url, thread_id, deltas=100)  # read to the end
    assert time.monotonic() - started < 5
    assert seen[-1][1:] == ("done", "[DONE]") and seen[-2][1] == "thread.run.completed"
    assert _text(seen) == _stored_reply(first.url, thread_id, run_id)
    assert _metric(app, "backend_event_log_errors_total", operation="publish") == before + 1
    status, body = _reattach(first.url, thread_id, run_id)
    assert status == 503 and "try again" in body["error"]


# --- the event log itself -------------------------------------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _events_of(*names, start=1):
    return [LoggedEvent(start + i, name, "{}") for i, name in enumerate(names)]


def test_the_memory_log_keeps_a_run_while_it_streams_then_for_the_replay_time():
    clock = Clock()
    log = MemoryEventLog(replay_seconds=10, live_seconds=100, clock=clock)
    log.append("run_1", Stream("alice", "thread_1"), _events_of("thread.run.created", "thread.message.delta"))
    clock.now += 99
    assert [e.seq for e in log.read("run_1", 1)] == [2] and log.last_seq("run_1") == 2
    log.append("run_1", Stream("alice", "thread_1"), _events_of("done", start=3))
    clock.now += 9.9
    assert log.stream("run_1") == Stream("alice", "thread_1")
    clock.now += 0.2
    assert log.stream("run_1") is None and log.read("run_1", 0) == [] and log.last_seq("run_1") == 0


def test_the_memory_log_is_bounded_per_run_and_in_runs():
    log = MemoryEventLog(replay_seconds=10, live_seconds=100, max_events=3, max_runs=2)
    log.append("run_1", Stream("alice", "t"), _events_of(*["thread.message.delta"] * 5))
    assert [e.seq for e in log.read("run_1", 0)] == [3, 4, 5]  # the oldest dropped: a reattach from 0 is a 410
    log.append("run_2", Stream("alice", "t"), _events_of("done"))  # expires first
    log.append("run_3", Stream("alice", "t"), _events_of("thread.run.created"))
    assert log.stream("run_2") is None and log.stream("run_1") and log.stream("run_3")


def test_a_follower_of_the_memory_log_is_woken_by_the_next_event():
    log = MemoryEventLog(replay_seconds=10, live_seconds=100)
    log.append("run_1", Stream("alice", "t"), _events_of("thread.run.created"))
    later = threading.Timer(0.2, lambda: log.append("run_1", Stream("alice", "t"), _events_of("done", start=2)))
    later.start()
    started = time.monotonic()
    assert [e.name for e in log.read("run_1", 1, wait=5)] == ["done"]
    assert time.monotonic() - started < 2
    assert log.read("run_1", 2, wait=0.1) == []


def test_the_event_log_url_follows_the_rate_limits_redis_unless_set():
    env = {"OPENAI_BASE_URL": "offline", "AUTH_MODE": "none", "ASSISTANT_CURATOR_MODEL": "gpt-4o"}
    assert load_settings(env).event_log_url == "memory://"
    redis = "redis://127.0.0.1:6379/0"
    assert load_settings({**env, "RATELIMIT_STORAGE_URI": redis}).event_log_url == redis
    assert load_settings({**env, "RATELIMIT_STORAGE_URI": redis, "EVENT_LOG_URL": "memory://"}).event_log_url == (
        "memory://"
    )
    with pytest.raises(ConfigError, match="EVENT_LOG_URL: expected memory:// or a redis:// URL"):
        load_settings({**env, "EVENT_LOG_URL": "http://example"})
    with pytest.raises(ConfigError, match="STREAM_REPLAY_SECONDS"):
        load_settings({**env, "STREAM_REPLAY_SECONDS": "-1"})


WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def test_a_submit_tool_outputs_stream_goes_on_from_the_runs_last_id(live_server):
    thread_id = _new_thread(live_server.url, 'w [fake call=get_weather args={"city": "Oslo"} duration=0.3]')
    base = f"{live_server.url}/api/openai/threads/{thread_id}/runs"
    body = {"assistant_type": "curator", "stream": True, "tools": [WEATHER]}
    with httpx2.stream("POST", base, json=body, headers=_headers(), timeout=30) as r:
        first = list(_events(r.iter_lines()))
    assert first[-2][1] == "thread.run.requires_action"
    run = first[-2][2]
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    outputs = {"tool_outputs": [{"tool_call_id": call_id, "output": "sunny"}], "stream": True}
    path = f"{base}/{run['id']}/submit_tool_outputs"
    with httpx2.stream("POST", path, json=outputs, headers=_headers(), timeout=30) as r:
        second = list(_events(r.iter_lines()))
    assert [e[0] for e in first + second] == list(range(1, len(first) + len(second) + 1))
    status, rest = _reattach(live_server.url, thread_id, run["id"], after=first[-1][0])  # after the first `done`
    assert status == 200 and rest == second


def test_a_create_and_run_stream_is_replayed_from_its_thread_created(live_server):
    body = {
        "assistant_type": "curator",
        "stream": True,
        "thread": {"messages": [{"role": "user", "content": SLOW_REPLY}]},
    }
    seen = []
    with httpx2.stream(
        "POST", f"{live_server.url}/api/openai/threads/runs", json=body, headers=_headers(), timeout=30
    ) as r:
        for event in _events(r.iter_lines()):
            seen.append(event)
            if event[1] == "thread.message.delta":
                break
    assert seen[0][:2] == (1, "thread.created") and seen[1][:2] == (2, "thread.run.created")
    thread_id, run_id = seen[0][2]["id"], seen[1][2]["id"]
    status, replay = _reattach(live_server.url, thread_id, run_id)
    assert status == 200 and replay[: len(seen)] == seen
    assert _text(replay) == _stored_reply(live_server.url, thread_id, run_id)

"""The lean upstream client against the fake upstream, and against servers that misbehave on purpose."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx2
import pytest

from app.contract import (
    UpstreamBusy,
    UpstreamConfigError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTransient,
)
from app.engines.upstream_http import UpstreamHTTP
from fake_openai import create_fake_app

KEY = "sk-lean-test-key-0123456789abcdef"
ODD_KEY = "plainsecretvalue42"  # not shaped like an OpenAI key: only the client knows to hide it


@pytest.fixture
def fake_app():
    return create_fake_app(api_key=KEY, default_duration=0.2)


@pytest.fixture
def upstream(fake_app):
    client = UpstreamHTTP("http://fake.invalid/v1", KEY, transport=httpx2.WSGITransport(app=fake_app))
    yield client
    client.close()


def _wsgi(status, body, headers=(), content_type="application/json"):
    """A WSGI app answering every request the same way; `body` may use the request's Authorization header."""

    def app(environ, start_response):
        text = body(environ) if callable(body) else body
        start_response(status, [("Content-Type", content_type), *headers])
        return [text.encode()]

    return app


def _client(app, key=KEY):
    return UpstreamHTTP("http://test.invalid/v1", key, transport=httpx2.WSGITransport(app=app))


def _start_response(upstream, conversation_id, text="hi"):
    body = {
        "model": "gpt-test",
        "conversation": conversation_id,
        "input": [{"type": "message", "role": "user", "content": text}],
        "background": True,
        "store": True,
    }
    return upstream.post("/responses", body, timeout=5)[0]


def test_json_get_and_post(upstream):
    conversation, headers = upstream.post("/conversations", {"metadata": {"k": "v"}}, timeout=5)
    assert conversation["object"] == "conversation"
    assert headers["x-request-id"].startswith("req_")
    response = _start_response(upstream, conversation["id"])
    looked, _ = upstream.get(f"/responses/{response['id']}", timeout=5)
    assert looked["id"] == response["id"]
    assert looked["status"] in ("queued", "in_progress")
    item = {"type": "message", "role": "user", "content": "listed"}
    other, _ = upstream.post("/conversations", {"items": [item]}, timeout=5)
    items, _ = upstream.get(f"/conversations/{other['id']}/items", params={"limit": 5, "order": "asc"})
    assert items["object"] == "list" and items["data"][0]["role"] == "user"
    deleted, _ = upstream.delete(f"/conversations/{conversation['id']}")
    assert deleted["deleted"] is True


def test_poll_hint_header_is_returned():
    # The Responses API sends no openai-poll-after-ms (only Assistants runs do): a stand-in upstream.
    upstream = _client(_wsgi("200 OK", '{"id": "run_1"}', headers=[("openai-poll-after-ms", "1500")]))
    _, headers = upstream.get("/threads/thread_1/runs/run_1")
    assert headers["openai-poll-after-ms"] == "1500"


def test_not_found(upstream):
    with pytest.raises(UpstreamNotFound) as caught:
        upstream.get("/responses/resp_missing", what="retrieve run")
    assert "resp_missing" in str(caught.value)
    assert caught.value.status == 404 and caught.value.maybe_sent is False


@pytest.mark.parametrize("kind,status", [("429", 429), ("500", 500), ("503", 503)])
def test_transient_statuses(upstream, fake_app, kind, status):
    conversation, _ = upstream.post("/conversations", {})
    response = _start_response(upstream, conversation["id"])
    fake_app.fake.config.update({"fail_every_nth_poll": 1, "fail_kind": kind})
    with pytest.raises(UpstreamTransient) as caught:
        upstream.get(f"/responses/{response['id']}")
    assert caught.value.status == status
    assert caught.value.maybe_sent is (status >= 500)
    if status == 429:
        assert caught.value.retry_after == 0.0


def test_retry_after_header_is_read():
    app = _wsgi("503 Service Unavailable", '{"error": {"message": "busy"}}', headers=[("Retry-After", "7")])
    with pytest.raises(UpstreamTransient) as caught:
        _client(app).post("/responses", {"model": "m"})
    assert caught.value.retry_after == 7.0 and caught.value.maybe_sent is True


def test_conversation_locked_is_busy(upstream):
    conversation, _ = upstream.post("/conversations", {})
    _start_response(upstream, conversation["id"])
    with pytest.raises(UpstreamBusy) as caught:
        _start_response(upstream, conversation["id"], "again")
    assert caught.value.status == 400 and caught.value.maybe_sent is False


def test_assistants_active_run_is_busy():
    message = "Thread thread_abc already has an active run run_abc."
    app = _wsgi("400 Bad Request", json.dumps({"error": {"message": message, "type": "invalid_request_error"}}))
    with pytest.raises(UpstreamBusy):
        _client(app).post("/threads/thread_abc/runs", {})


def test_other_4xx_is_rejected(upstream):
    with pytest.raises(UpstreamRejected) as caught:
        upstream.post("/responses", {"model": "m", "background": False})
    assert caught.value.status == 400 and caught.value.maybe_sent is False


def test_bad_key_is_a_config_error_without_the_key(fake_app):
    client = UpstreamHTTP(
        "http://fake.invalid/v1", "sk-wrong-key-abcdef0123456789", transport=httpx2.WSGITransport(app=fake_app)
    )
    with pytest.raises(UpstreamConfigError) as caught:
        client.get("/conversations/conv_1")
    assert caught.value.status == 401
    assert "abcdef" not in str(caught.value) and "0123456789" not in str(caught.value)


@pytest.mark.parametrize(
    "status", ["400 Bad Request", "500 Internal Server Error", "404 Not Found", "401 Unauthorized"]
)
def test_key_echoed_by_the_upstream_never_reaches_the_message_or_log(status, caplog):
    def echo(environ):
        return json.dumps({"error": {"message": f"bad auth {environ.get('HTTP_AUTHORIZATION')} here"}})

    for key in (KEY, ODD_KEY):
        with pytest.raises(Exception) as caught:
            _client(_wsgi(status, echo), key=key).get("/responses/resp_1")
        assert key not in str(caught.value)
        assert key not in repr(caught.value.args)
        assert key not in caplog.text


def test_non_json_error_and_answer():
    with pytest.raises(UpstreamTransient):
        _client(_wsgi("502 Bad Gateway", "<html>bad gateway</html>", content_type="text/html")).get("/x")
    with pytest.raises(UpstreamTransient) as caught:
        _client(_wsgi("200 OK", "not json", content_type="text/plain")).get("/x")
    assert "not JSON" in str(caught.value)


class SilentServer:
    """Accepts connections and reads, but never answers."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"
        self.held = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)

    def close(self):
        self.sock.close()
        for conn in self.held:
            conn.close()


def test_a_silent_upstream_times_out_within_the_timeout():
    server = SilentServer()
    client = UpstreamHTTP(server.url, KEY)
    try:
        started = time.monotonic()
        with pytest.raises(UpstreamTransient) as caught:
            client.post("/responses", {"model": "m"}, timeout=0.3)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 1.5
        assert caught.value.maybe_sent is True  # read timeout: it may have been received
        assert KEY not in str(caught.value)
        with pytest.raises(UpstreamTransient), client.stream("GET", "/responses/r", timeout=0.3) as events:
            list(events)
    finally:
        client.close()
        server.close()


def test_an_unreachable_upstream_surely_did_not_get_the_request():
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    client = UpstreamHTTP(f"http://127.0.0.1:{port}/v1", KEY)
    with pytest.raises(UpstreamTransient) as caught:
        client.post("/responses", {"model": "m"}, timeout=1.0)
    assert caught.value.maybe_sent is False
    assert KEY not in str(caught.value)
    client.close()


def test_a_reset_after_sending_may_have_been_received():
    sock = socket.create_server(("127.0.0.1", 0))

    def accept_and_drop():
        conn, _ = sock.accept()
        conn.recv(65536)
        conn.close()

    threading.Thread(target=accept_and_drop, daemon=True).start()
    client = UpstreamHTTP(f"http://127.0.0.1:{sock.getsockname()[1]}/v1", KEY)
    with pytest.raises(UpstreamTransient) as caught:
        client.post("/responses", {"model": "m"}, timeout=2.0)
    assert caught.value.maybe_sent is True
    client.close()
    sock.close()


def test_stream_of_the_fake(upstream):
    conversation, _ = upstream.post("/conversations", {})
    body = {"model": "gpt-test", "conversation": conversation["id"], "background": True, "stream": True}
    body["input"] = [{"type": "message", "role": "user", "content": "hi"}]
    with upstream.stream("POST", "/responses", body, timeout=5) as events:
        read = list(events)
    seen = [(e["type"], e["sequence_number"]) for e in read]
    assert seen[0] == ("response.created", 0) and seen[-1][0] == "response.completed"
    assert [n for _, n in seen] == list(range(len(seen)))
    params = {"stream": "true", "starting_after": seen[-2][1]}
    with upstream.stream("GET", f"/responses/{read[0]['response']['id']}", params=params, timeout=5) as events:
        assert [e["type"] for e in events] == ["response.completed"]


def test_stream_refused_is_translated(upstream, fake_app):
    fake_app.fake.config.update({"stream_mode": "refuse"})
    conversation, _ = upstream.post("/conversations", {})
    response = _start_response(upstream, conversation["id"])
    with (
        pytest.raises(UpstreamRejected),
        upstream.stream("GET", f"/responses/{response['id']}", params={"stream": "true"}),
    ):
        pass
    fake_app.fake.config.update({"stream_mode": "ok"})
    with pytest.raises(UpstreamNotFound), upstream.stream("GET", "/responses/resp_gone", params={"stream": "true"}):
        pass


def test_stream_parsing_skips_comments_and_done_and_passes_unknown_types():
    text = (
        ": keep-alive\n\n"
        'event: response.created\ndata: {"type": "response.created", "sequence_number": 1}\n\n'
        'data: {"type": "keepalive", "sequence_number": 2}\n\n'
        ":another comment\n"
        'id: 3\nevent: response.output_text.delta\ndata:{"type": "response.output_text.delta", "delta": "Hi"}\n\n'
        "event: done\ndata: [DONE]\n\n"
    )
    client = _client(_wsgi("200 OK", text, content_type="text/event-stream"))
    with client.stream("POST", "/responses", {"stream": True}) as events:
        kinds = [e["type"] for e in events]
    assert kinds == ["response.created", "keepalive", "response.output_text.delta"]


def test_stream_events_named_in_skip_are_passed_over_unparsed_and_the_set_may_change():
    text = (
        'event: response.created\ndata: {"type": "response.created", "sequence_number": 1}\n\n'
        "event: response.output_text.delta\ndata: {not even JSON\n\n"
        'data: {"type": "response.output_text.delta", "delta": "no event line: parsed"}\n\n'
        'event: response.in_progress\ndata: {"type": "response.in_progress", "sequence_number": 3}\n\n'
        'event: response.output_text.delta\ndata: {"type": "response.output_text.delta", "delta": "heard"}\n\n'
    )
    client = _client(_wsgi("200 OK", text, content_type="text/event-stream"))
    skip = {"response.output_text.delta"}
    read = []
    with client.stream("POST", "/responses", {"stream": True}, skip=skip) as events:
        for event in events:
            read.append(event.get("delta") or event["type"])
            if event["type"] == "response.in_progress":
                skip.clear()  # from here on, every event is read
    assert read == ["response.created", "no event line: parsed", "response.in_progress", "heard"]


def test_stream_with_a_broken_event_is_transient():
    client = _client(_wsgi("200 OK", "data: {not json\n\n", content_type="text/event-stream"))
    with pytest.raises(UpstreamTransient), client.stream("GET", "/responses/r") as events:
        list(events)


def test_the_key_is_sent_as_bearer_and_no_retry_happens():
    calls = []

    def app(environ, start_response):
        calls.append(environ.get("HTTP_AUTHORIZATION"))
        start_response("500 Internal Server Error", [("Content-Type", "application/json")])
        return [b'{"error": {"message": "boom"}}']

    with pytest.raises(UpstreamTransient):
        _client(app).post("/responses", {"model": "m"})
    assert calls == [f"Bearer {KEY}"]

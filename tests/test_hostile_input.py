"""Hostile input: IDs and query parameters matched whole, JSON bounded before parsing, text that cannot
be encoded, bodies cut short, log lines that cannot be forged, gunicorn's and nginx's own refusals as
JSON, and slow clients cut off. The app in-process against the fake upstream, then the shipped
gunicorn (gevent) and nginx for real."""

from __future__ import annotations

import json
import socket
import time

import jwt
import pytest

from harness.servers import start_fake_upstream, start_gunicorn, start_nginx
from tests.helpers import DEPLOY_UPSTREAM_KEY, call, gunicorn_env, upstream_calls

# --- the app in-process, on both engines -------------------------------------------------------

NEWLINE_IDS = ["thread_x%0A", "thread_x%0D", "thread_x%0D%0A", "%0Athread_x"]


@pytest.mark.parametrize("bad_id", NEWLINE_IDS)
def test_a_thread_id_with_a_newline_is_400_and_never_reaches_the_upstream(api, fake, bad_id):
    calls = upstream_calls(fake)
    for method, path in [
        ("get", f"/threads/{bad_id}"),
        ("delete", f"/threads/{bad_id}"),
        ("get", f"/threads/{bad_id}/messages"),
        ("post", f"/threads/{bad_id}/messages"),
        ("post", f"/threads/{bad_id}/runs"),
        ("get", f"/threads/{bad_id}/runs/run_1"),
        ("post", f"/threads/{bad_id}/runs/run_1/cancel"),
    ]:
        answer = getattr(api, method)(path, json={"role": "user", "content": "hi", "assistant_type": "curator"})
        assert answer.status_code == 400, (method, path, answer.json)
        assert answer.json["error"].startswith("Invalid thread ID"), answer.json
    assert upstream_calls(fake) == calls


def test_a_run_id_with_a_newline_is_400_and_never_reaches_the_upstream(api, fake):
    thread = api.new_thread()
    calls = upstream_calls(fake)
    for method, path in [
        ("get", f"/threads/{thread}/runs/run_x%0A"),
        ("post", f"/threads/{thread}/runs/run_x%0A/cancel"),
        ("post", f"/threads/{thread}/runs/run_x%0A/submit_tool_outputs"),
    ]:
        answer = getattr(api, method)(path, json={"tool_outputs": [{"tool_call_id": "c", "output": "o"}]})
        assert answer.status_code == 400 and answer.json["error"].startswith("Invalid run ID"), answer.json
    assert upstream_calls(fake) == calls


@pytest.mark.parametrize("name", ["after", "before", "run_id"])
@pytest.mark.parametrize("value", ["msg_x%0A", "msg_x%0D", "msg%20x", "", "x" * 129])
def test_an_id_in_the_query_is_matched_whole_and_named(api, fake, name, value):
    thread = api.new_thread()
    calls = upstream_calls(fake)
    answer = api.get(f"/threads/{thread}/messages?{name}={value}")
    assert answer.status_code == 400, answer.json
    assert f"'{name}'" in answer.json["error"], answer.json
    assert upstream_calls(fake) == calls


@pytest.mark.parametrize(
    "limit", ["%C2%B2", "%2B5", "%205", "5%20", "5.0", "0", "101", "-1", "%D9%A3", "1e1", "", "9" * 30]
)
def test_limit_takes_ascii_digits_only(api, fake, limit):
    thread = api.new_thread()
    calls = upstream_calls(fake)
    answer = api.get(f"/threads/{thread}/messages?limit={limit}")
    assert answer.status_code == 400 and "'limit'" in answer.json["error"], answer.json
    assert upstream_calls(fake) == calls


def test_a_valid_limit_and_cursor_still_list(api):
    thread = api.new_thread()
    first = api.say(thread, "one")
    api.say(thread, "two")
    answer = api.get(f"/threads/{thread}/messages?limit=05&order=asc&after={first['id']}")
    assert answer.status_code == 200, answer.json
    assert [m["content"][0]["text"]["value"] for m in answer.json["data"]] == ["two"]


def test_a_query_parameter_given_twice_is_400(api):
    thread = api.new_thread()
    answer = api.get(f"/threads/{thread}/messages?limit=5&limit=6")
    assert answer.status_code == 400 and "'limit'" in answer.json["error"]


@pytest.mark.parametrize(
    "body",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"a": ' * 5_000 + "1" + "}" * 5_000,
        '{"role": "user", "content": "hi", "metadata": {"k": ' + "[" * 100 + "]" * 100 + "}}",
        "[" * 10_000,  # not even closed
    ],
)
def test_deeply_nested_json_is_400_before_it_is_parsed(api, fake, body):
    thread = api.new_thread()
    calls = upstream_calls(fake)
    answer = api.post(f"/threads/{thread}/messages", data=body, content_type="application/json")
    assert answer.status_code == 400 and "levels deep" in answer.json["error"], answer.json
    assert upstream_calls(fake) == calls


def test_brackets_inside_strings_are_text_not_depth(api):
    thread = api.new_thread()
    text = '[{"\\"' * 200 + "]}"
    answer = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": text})
    assert answer.status_code == 200, answer.json
    assert answer.json["content"][0]["text"]["value"] == text


@pytest.mark.parametrize(
    "body",
    [
        '{"role": "user", "content": "hi \\ud800"}',
        '{"role": "user", "content": "\\udfff"}',
        '{"role": "user", "content": [{"type": "text", "text": "a\\udc80b"}]}',
        '{"role": "user", "content": "hi", "metadata": {"\\ud83d": "v"}}',
    ],
)
def test_text_that_cannot_be_encoded_is_400(api, fake, body):
    thread = api.new_thread()
    calls = upstream_calls(fake)
    answer = api.post(f"/threads/{thread}/messages", data=body, content_type="application/json")
    assert answer.status_code == 400 and "surrogate" in answer.json["error"], answer.json
    assert upstream_calls(fake) == calls


def test_a_surrogate_pair_is_text_like_any_other(api):
    thread = api.new_thread()
    answer = api.post(
        f"/threads/{thread}/messages",
        data='{"role": "user", "content": "\\ud83d\\ude00"}',
        content_type="application/json",
    )
    assert answer.status_code == 200 and answer.json["content"][0]["text"]["value"] == "\U0001f600"


def test_bytes_that_are_not_utf8_are_400(api, fake):
    thread = api.new_thread()
    calls = upstream_calls(fake)
    answer = api.post(
        f"/threads/{thread}/messages", data=b'{"role": "user", "content": "\xff\xfe"}', content_type="application/json"
    )
    assert answer.status_code == 400 and "UTF-8" in answer.json["error"], answer.json
    assert upstream_calls(fake) == calls


# --- the shipped gunicorn (gevent) and nginx, for real --------------------------------------------

JWT_SECRET = "a-test-secret-of-at-least-32-characters-0001"
HEADER_TIMEOUT = 1  # seconds, HEADER_TIMEOUT_SECONDS of the server below
FORGED = "2026-01-01 00:00:00,000 INFO app.access [forged] GET admin 200"


def token(subject: str) -> str:
    return jwt.encode({"sub": subject, "exp": int(time.time()) + 3600}, JWT_SECRET, algorithm="HS256")


ALICE = token("alice")


class Answer:
    """An HTTP answer read off a raw socket: status, headers (lower-case names), body, seconds taken."""

    def __init__(self, raw: bytes, seconds: float):
        self.raw, self.seconds = raw, seconds
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1]) if lines[0].startswith("HTTP/") else None
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    def json(self):
        assert self.headers.get("content-type", "").startswith("application/json"), self.raw[:500]
        return json.loads(self.body)


def raw_http(port: int, data: bytes, *, half_close=False, timeout: float = 15) -> Answer:
    """Send bytes as they are, read to the end of the connection."""
    started = time.monotonic()
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if data:
            s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return Answer(b"".join(chunks), time.monotonic() - started)


def request(method: str, target: str, headers=(), body: bytes | str = b"", auth=ALICE, length=None) -> bytes:
    """An HTTP/1.1 request that asks the server to close when it has answered."""
    body = body.encode() if isinstance(body, str) else body
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close"]
    if auth:
        lines.append(f"Authorization: Bearer {auth}")
    if body and not any(h.lower().startswith("content-type:") for h in headers):
        lines.append("Content-Type: application/json")
    if (body or length is not None) and not any(h.lower().startswith(("content-length:", "transfer")) for h in headers):
        lines.append(f"Content-Length: {len(body) if length is None else length}")
    return ("\r\n".join([*lines, *headers]) + "\r\n\r\n").encode("latin-1") + body


class Backend:
    """The fake upstream and the shipped gunicorn (one gevent worker) in front of it, with JWT callers."""

    def __init__(self, directory):
        self.directory = directory
        self.upstream, self.upstream_url = start_fake_upstream(
            directory, "--default-duration", "0.2", "--api-key", DEPLOY_UPSTREAM_KEY
        )
        env = gunicorn_env(
            self.upstream_url,
            f"sqlite:///{directory}/backend.db",
            AUTH_MODE="jwt",
            JWT_SECRET=JWT_SECRET,
            API_TOKENS=None,
            FORWARDED_PROXIES="0",
            WEB_CONCURRENCY="1",
            HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        )
        try:
            self.gunicorn, self.port = start_gunicorn(directory, env)
        except BaseException:
            self.upstream.stop()
            raise
        self.thread = self.new_thread()

    def new_thread(self) -> str:
        status, _, body = call(
            "POST", f"http://127.0.0.1:{self.port}/api/openai/threads", {}, {"Authorization": f"Bearer {ALICE}"}
        )
        assert status == 200, body
        return body["id"]

    def upstream_writes(self) -> int:
        requests = call("GET", f"{self.upstream_url}/_fake/stats")[2]["requests"]
        return sum(n for route, n in requests.items() if not route.startswith("GET"))

    def log(self) -> str:
        return self.gunicorn.log()

    def stop(self):
        self.gunicorn.stop()
        self.upstream.stop()


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    b = Backend(tmp_path_factory.mktemp("hostile"))
    yield b
    b.stop()


def _messages(backend, thread) -> list[str]:
    status, _, body = call(
        "GET",
        f"http://127.0.0.1:{backend.port}/api/openai/threads/{thread}/messages",
        headers={"Authorization": f"Bearer {ALICE}"},
    )
    assert status == 200, body
    return [m["content"][0]["text"]["value"] for m in body["data"]]


def test_a_body_shorter_than_its_content_length_is_400_and_nothing_is_done(backend):
    thread = backend.new_thread()
    writes = backend.upstream_writes()
    whole = b'{"role": "user", "content": "half of it"}'  # valid JSON on its own: only the length tells
    answer = raw_http(
        backend.port,
        request("POST", f"/api/openai/threads/{thread}/messages", body=whole, length=len(whole) + 40),
        half_close=True,
    )
    assert answer.status == 400, answer.raw
    assert "shorter than its Content-Length" in answer.json()["error"]
    assert backend.upstream_writes() == writes
    assert "half of it" not in _messages(backend, thread)


def test_a_run_whose_body_is_cut_short_is_not_started(backend):
    writes = backend.upstream_writes()
    whole = b'{"assistant_type": "curator"}'
    answer = raw_http(
        backend.port,
        request("POST", f"/api/openai/threads/{backend.thread}/runs", body=whole, length=len(whole) + 1),
        half_close=True,
    )
    assert answer.status == 400 and "Content-Length" in answer.json()["error"], answer.raw
    assert backend.upstream_writes() == writes


def test_a_chunked_body_cut_short_is_400_and_nothing_is_done(backend):
    thread = backend.new_thread()
    writes = backend.upstream_writes()
    part = b'{"role": "user", "content": "chunked"}'
    data = request(
        "POST", f"/api/openai/threads/{thread}/messages", headers=["Transfer-Encoding: chunked"], auth=ALICE
    ) + b"%x\r\n%s\r\n" % (len(part), part)
    answer = raw_http(backend.port, data, half_close=True)
    assert answer.status == 400, answer.raw
    assert answer.json()["error"]
    assert backend.upstream_writes() == writes
    assert "chunked" not in _messages(backend, thread)


def test_a_newline_in_a_path_or_a_jwt_subject_never_starts_a_log_line(backend):
    forged_path = "/api/openai/threads/x%0A" + FORGED.replace(" ", "%20")
    assert raw_http(backend.port, request("GET", forged_path)).status == 400
    forged_sub = token("mallory\r\n" + FORGED + " 0.1ms user=root")
    assert raw_http(backend.port, request("GET", "/api/openai/assistant_types", auth=forged_sub)).status == 200
    assert raw_http(backend.port, b"GET /\x1b[2J\x0b HTTP/1.1\r\nHost: x\r\n\r\n").status == 400

    def logged():
        log = backend.log()
        return log if "user=mallory" in log and "InvalidRequestLine" in log else None

    log = wait_for(logged, "the access lines")
    lines = log.splitlines()
    assert not [line for line in lines if line.startswith(FORGED[:23])], log[-3000:]
    assert f"GET /api/openai/threads/x\\n{FORGED} 400" in log
    assert f"user=mallory\\r\\n{FORGED}" in log
    assert "\x1b" not in log and "\x0b" not in log


def wait_for(predicate, what, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize(
    "data,status",
    [
        (b"GET /" + b"a" * 5_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9_000 + b"\r\n\r\n", 431),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(120)) + b"\r\n", 431),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nBad Header: x\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  folded\r\n\r\n", 400),
        (b"POST /api/openai/threads HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /api/openai/threads HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
    ],
)
def test_gunicorns_own_refusals_are_json(backend, data, status):
    answer = raw_http(backend.port, data)
    assert answer.status == status, answer.raw
    assert isinstance(answer.json()["error"], str) and answer.json()["error"]


def test_gunicorns_refusal_under_v1_takes_openais_shape(backend):
    answer = raw_http(backend.port, b"POST /v1/threads HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    assert answer.status == 400, answer.raw
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_a_client_that_never_finishes_its_headers_is_cut_off(backend):
    answer = raw_http(backend.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert answer.status == 408, answer.raw
    assert "did not arrive" in answer.json()["error"]
    assert HEADER_TIMEOUT - 0.2 < answer.seconds < HEADER_TIMEOUT + 3


def test_a_client_that_sends_nothing_is_cut_off(backend):
    answer = raw_http(backend.port, b"")
    assert answer.status == 408 and answer.seconds < HEADER_TIMEOUT + 3


def test_a_head_sent_a_byte_at_a_time_is_cut_off_by_its_total_time(backend):
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", backend.port), timeout=10) as s:
        try:
            for byte in b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
                s.sendall(bytes([byte]))
                time.sleep(0.1)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert time.monotonic() - started < HEADER_TIMEOUT + 3


def _read_answer(s: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(Answer(head + b"\r\n\r\n", 0).headers["content-length"])
    while len(body) < length:
        body += s.recv(65536)
    return head


def test_a_kept_alive_connection_may_stay_idle_longer_than_the_header_timeout(backend):
    with socket.create_connection(("127.0.0.1", backend.port), timeout=10) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(s).startswith(b"HTTP/1.1 200")
        time.sleep(HEADER_TIMEOUT + 0.5)
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_answer(s).startswith(b"HTTP/1.1 200")


# Odd inputs of every kind, each answered with a 4xx JSON error, nothing written upstream.
ODD = [
    # IDs in the path
    ("GET", "/api/openai/threads/thread_x%0A", (), ""),
    ("GET", "/api/openai/threads/thread_x%0D", (), ""),
    ("GET", "/api/openai/threads/%00", (), ""),
    ("GET", "/api/openai/threads/thread%20x", (), ""),
    ("GET", "/api/openai/threads/" + "a" * 129, (), ""),
    ("GET", "/api/openai/threads/th%C3%A9", (), ""),
    ("GET", "/api/openai/threads/%E2%80%A8", (), ""),
    ("DELETE", "/api/openai/threads/thread_x%0A", (), ""),
    ("POST", "/api/openai/threads/thread_x%0A/messages", (), '{"role": "user", "content": "hi"}'),
    ("POST", "/api/openai/threads/thread_x%0A/runs", (), '{"assistant_type": "curator"}'),
    ("GET", "/api/openai/threads/{thread}/runs/run_x%0A", (), ""),
    ("POST", "/api/openai/threads/{thread}/runs/run_x%0A/cancel", (), ""),
    ("POST", "/api/openai/threads/{thread}/runs/run%09x/submit_tool_outputs", (), '{"tool_outputs": []}'),
    ("GET", "/v1/threads/thread_x%0A", (), ""),
    ("GET", "/api/openai/threads/..%2F..%2Fetc", (), ""),
    ("POST", "/api/assistants/nobody/threads/{thread}/runs", (), "{}"),
    # query parameters
    ("GET", "/api/openai/threads/{thread}/messages?after=msg_x%0A", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?before=msg_x%0A", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?run_id=run_x%0A", (), ""),
    ("GET", "/v1/threads/{thread}/messages?after=msg_x%0A", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=%C2%B2", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=%2B5", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=%205", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=5.0", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=0", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=-1", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=%D9%A3", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=" + "9" * 40, (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=%00", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?order=asc%0A", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?limit=5&limit=6", (), ""),
    ("GET", "/api/openai/threads/{thread}/messages?colour=red", (), ""),
    # bodies
    ("POST", "/api/openai/threads", (), "[" * 10_000 + "]" * 10_000),
    ("POST", "/api/openai/threads/{thread}/messages", (), '{"a": ' * 3_000 + "1" + "}" * 3_000),
    ("POST", "/v1/threads/{thread}/messages", (), "[" * 10_000),
    ("POST", "/api/openai/threads/{thread}/messages", (), '{"role": "user", "content": "\\ud800"}'),
    (
        "POST",
        "/api/openai/threads/{thread}/messages",
        (),
        '{"role": "user", "content": "hi", "metadata": {"\\udfff": "v"}}',
    ),
    ("POST", "/api/openai/threads", (), '{"messages": [{"role": "user", "content": "\\udc00"}]}'),
    ("POST", "/api/openai/threads/{thread}/messages", (), b'{"role": "user", "content": "\xff"}'),
    ("POST", "/api/openai/threads/{thread}/messages", (), '\ufeff{"role": "user", "content": "bom"}'),
    ("POST", "/api/openai/threads/{thread}/messages", (), '{"role": "user", "content": "hi"} trailing'),
    ("POST", "/api/openai/threads/{thread}/messages", (), "null"),
    ("POST", "/api/openai/threads/{thread}/messages", (), '"text"'),
    (
        "POST",
        "/api/openai/threads/{thread}/messages",
        ("Content-Type: text/plain",),
        '{"role": "user", "content": "x"}',
    ),
    ("POST", "/api/openai/threads/{thread}/runs", (), '{"assistant_type": "curator", "temperature": NaN}'),
    ("POST", "/api/openai/threads/{thread}/runs", (), '{"assistant_type": "curator", "temperature": Infinity}'),
    ("POST", "/api/openai/threads/{thread}/runs", (), '{"assistant_type": "curator", "temperature": 1e999}'),
    ("POST", "/api/openai/threads/{thread}/runs", (), '{"assistant_type": "curator", "top_p": 1' + "0" * 5_000 + "}"),
    ("POST", "/api/openai/threads/{thread}/runs", (), '{"assistant_type": "curator", "stream": 1}'),
    ("POST", "/api/openai/threads/{thread}/runs", (), '{"assistant_type": "curator\\n"}'),
    ("POST", "/api/openai/threads/{thread}/runs", (), '{"assistant_id": "asst_x\\u0000"}'),
    ("POST", "/api/openai/threads", (), '{"messages": [' + ",".join(['{"role": "user", "content": "x"}'] * 33) + "]}"),
    ("POST", "/api/openai/threads/{thread}/messages", ("Content-Length: 2000000",), "{}"),
    # headers
    ("GET", "/api/openai/threads/{thread}", ("Authorization: Basic YWxpY2U6eA==",), ""),
    ("GET", "/api/openai/threads/{thread}", ("Authorization: Bearer " + "x" * 5_000,), ""),
    ("GET", "/api/openai/threads/{thread}", ("Authorization: Bearer a.b.c",), ""),
    (
        "GET",
        "/api/openai/threads/{thread}",
        ("Authorization: Bearer " + jwt.encode({"sub": "a"}, JWT_SECRET, "HS256"),),
        "",
    ),
    ("GET", "/api/openai/threads/{thread}", ("Authorization: Bearer\tx\x01y",), ""),
    (
        "POST",
        "/api/openai/threads/{thread}/messages",
        ("Idempotency-Key: " + "k" * 300,),
        '{"role": "user", "content": "x"}',
    ),
    ("POST", "/api/openai/threads", ("Content-Length: 2", "Transfer-Encoding: chunked"), "{}"),
    ("POST", "/api/openai/threads", ("Content-Length: abc",), "{}"),
    ("PATCH", "/api/openai/threads/{thread}", (), "{}"),
    ("GET", "/api/openai/threads/{thread}", ("X-Bad\x7fName: 1",), ""),
    ("GET", "/api/openai/threads/{thread}?x=" + "a" * 5_000, (), ""),
]


@pytest.mark.parametrize("case", range(len(ODD)), ids=lambda i: f"{i}-{ODD[i][0]}-{ODD[i][1][:40]}")
def test_odd_input_is_a_4xx_json_error_and_writes_nothing_upstream(backend, case):
    method, target, headers, body = ODD[case]
    auth = None if any(h.startswith("Authorization:") for h in headers) else ALICE
    writes = backend.upstream_writes()
    answer = raw_http(backend.port, request(method, target.format(thread=backend.thread), headers, body, auth=auth))
    assert answer.status is not None and 400 <= answer.status < 500, answer.raw[:600]
    error = answer.json()["error"]
    assert error if isinstance(error, str) else error["message"]
    assert backend.upstream_writes() == writes


# --- nginx in front: its own refusals are JSON too, and it cuts off slow clients -----------------


@pytest.fixture(scope="module")
def nginx_port(backend, tmp_path_factory):
    child, port = start_nginx(tmp_path_factory.mktemp("nginx"), backend.port, 5, header_timeout=HEADER_TIMEOUT)
    yield port
    child.stop()


@pytest.mark.parametrize(
    "data,status",
    [
        (b"GET /" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /api/openai/threads HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n", 400),
        (b"GARBAGE\r\n\r\n", 400),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header: x\r\n\r\n", 400),
        # Past nginx's limits but not gunicorn's: gunicorn's own JSON comes back through nginx.
        (b"GET /" + b"a" * 5_000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 414),
    ],
)
def test_nginxs_refusals_are_json(nginx_port, data, status):
    answer = raw_http(nginx_port, data)
    assert answer.status == status, answer.raw[:600]
    error = answer.json()["error"]
    assert error if isinstance(error, str) else error["message"]


def test_nginxs_refusal_under_v1_takes_openais_shape(nginx_port):
    answer = raw_http(nginx_port, b"GET /v1/threads HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n")
    assert answer.status == 400, answer.raw[:600]
    assert answer.json()["error"]["type"] == "invalid_request_error"


def test_nginx_cuts_off_a_client_that_never_finishes_its_headers(nginx_port, backend):
    answer = raw_http(nginx_port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    assert answer.raw == b"" and answer.seconds < HEADER_TIMEOUT + 3

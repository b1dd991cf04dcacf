"""The lean HTTP/1.1 client (app/engines/http1.py) against a server that answers scripted bytes."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from app.engines.http1 import Broken, Http1, NotSent


class ScriptedServer:
    """Accepts connections; for each request read, sends the next scripted answer (bytes), then
    closes the connection when the answer is followed by None."""

    def __init__(self, answers):
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while self.answers:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                while self.answers:
                    request = self._read_request(conn)
                    if request is None:
                        break
                    self.requests.append(request)
                    conn.sendall(self.answers.pop(0))
                    if self.answers and self.answers[0] is None:
                        self.answers.pop(0)
                        break

    @staticmethod
    def _read_request(conn) -> bytes | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
                while len(body) < length:
                    body += conn.recv(65536)
        return head

    def close(self):
        self.listener.close()


@pytest.fixture
def serve():
    opened = []

    def start(*answers):
        server = ScriptedServer(answers)
        client = Http1(f"http://127.0.0.1:{server.port}/v1", {"Authorization": "Bearer k"})
        opened.append((server, client))
        return server, client

    yield start
    for server, client in opened:
        client.close()
        server.close()


def answer(body: bytes, *fields: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{f}\r\n" for f in fields)
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def test_a_sized_answer_is_read_whole_and_the_connection_kept_for_the_next_call(serve):
    server, client = serve(answer(b'{"a": 1}', "X-Request-Id: r1"), answer(b'{"b": 2}'))
    first = client.request("GET", "/responses/r?x=1", None, 5, 5)
    second = client.request("POST", "/responses", b'{"q": 1}', 5, 5)
    assert (first.status_code, first.json(), first.headers["x-request-id"]) == (200, {"a": 1}, "r1")
    assert second.json() == {"b": 2}
    assert server.connections == 1
    assert server.requests[0].startswith(b"GET /v1/responses/r?x=1 HTTP/1.1\r\n")
    assert b"Authorization: Bearer k" in server.requests[0]
    assert b"Content-Length: 8" in server.requests[1]


def test_a_chunked_answer_is_joined_and_its_trailers_read(serve):
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b'4;ext=1\r\n{"a"\r\n5\r\n: 12}\r\n0\r\nX-Trailer: t\r\n\r\n'
    )
    server, client = serve(chunked, answer(b"{}"))
    assert client.request("GET", "/x", None, 5, 5).json() == {"a": 12}
    assert client.request("GET", "/y", None, 5, 5).json() == {}
    assert server.connections == 1


def test_an_answer_without_a_length_is_read_to_the_connections_end(serve):
    server, client = serve(
        b'HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{"end": true}', None, answer(b"{}")
    )
    assert client.request("GET", "/x", None, 5, 5).json() == {"end": True}
    assert client.request("GET", "/y", None, 5, 5).json() == {}
    assert server.connections == 2  # the first one ended with its answer


def test_connection_close_is_obeyed_and_an_interim_answer_skipped(serve):
    interim = b"HTTP/1.1 100 Continue\r\n\r\n"
    server, client = serve(interim + answer(b"{}", "Connection: close"), None, answer(b'{"n": 2}'))
    assert client.request("POST", "/x", b"{}", 5, 5).status_code == 200
    assert client.request("GET", "/y", None, 5, 5).json() == {"n": 2}
    assert server.connections == 2


def test_repeated_headers_are_joined_and_names_read_in_any_case(serve):
    _, client = serve(answer(b"{}", "Set-Cookie: a=1", "set-cookie: b=2", "Retry-After:  3 "))
    headers = client.request("GET", "/x", None, 5, 5).headers
    assert headers["set-cookie"] == "a=1, b=2"
    assert headers.get("RETRY-AFTER") == "3" and "Retry-After" in headers


def test_an_answer_cut_short_is_broken_and_its_connection_not_kept(serve):
    server, client = serve(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{"a"', None, answer(b"{}"))
    with pytest.raises(Broken) as raised:
        client.request("GET", "/x", None, 5, 5)
    assert not raised.value.timed_out
    assert client.request("GET", "/y", None, 5, 5).json() == {}
    assert server.connections == 2


def test_a_silent_server_times_out_as_broken(serve):
    listener = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel does), never answers
    try:
        client = Http1(f"http://127.0.0.1:{listener.getsockname()[1]}", {})
        with pytest.raises(Broken) as raised:
            client.request("GET", "/x", None, 0.2, 5)
        assert raised.value.timed_out
    finally:
        listener.close()


def test_nothing_listening_is_not_sent():
    port = socket.create_server(("127.0.0.1", 0))
    free = port.getsockname()[1]
    port.close()
    with pytest.raises(NotSent):
        Http1(f"http://127.0.0.1:{free}", {}).request("GET", "/x", None, 1, 1)


def test_a_streamed_answer_reads_line_by_line_and_keeps_the_connection(serve):
    events = b"event: a\ndata: 1\n\nevent: b\ndata: 2\n\n"
    server, client = serve(answer(events, "Content-Type: text/event-stream"), answer(b"{}"))
    with client.open("GET", "/stream", None, 5, 5, accept="text/event-stream") as streamed:
        lines = list(streamed.iter_lines())
    assert lines == ["event: a", "data: 1", "", "event: b", "data: 2", ""]
    assert b"Accept: text/event-stream" in server.requests[0]
    assert client.request("GET", "/y", None, 5, 5).json() == {}
    assert server.connections == 1


def test_an_idle_connection_the_server_closed_is_not_reused(serve):
    server, client = serve(answer(b'{"n": 1}'), None, answer(b'{"n": 2}'))
    assert client.request("GET", "/x", None, 5, 5).json() == {"n": 1}
    time.sleep(0.05)  # the server's close reaches this side
    assert client.request("GET", "/y", None, 5, 5).json() == {"n": 2}
    assert server.connections == 2

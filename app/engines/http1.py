"""A minimal HTTP/1.1 client for the upstream's short JSON calls: kept-alive sockets, no retries.

A look at a waiting run is the call a backend makes most. Through httpx2 (its
client, httpcore2's pool and h11) one costs ~0.5 ms of CPU; written straight on a
socket, a fraction of it (docs/benchmarks.md). It does one thing: send a request
with a JSON or empty body, read one answer (Content-Length, chunked, or to the
connection's end), and keep the connection for the next call. Streams, uploads,
proxies and test transports stay with httpx2 (app/engines/upstream_http.py).

Failures are two: `NotSent` (no connection could be made: the upstream surely
never saw the request) and `Broken` (the connection failed or went silent once
the request was on its way: it may have been received).
"""

from __future__ import annotations

import collections
import contextlib
import json
import socket
import ssl
import time
from urllib.parse import urlsplit

# An idle connection older than this is closed rather than reused (servers close theirs).
KEEPALIVE_SECONDS = 5.0
# Only the connection taken is probed (not every idle one, as httpcore2 does), so a burst may leave many.
MAX_IDLE = 256
_MAX_HEAD_BYTES = 64 * 1024
_READ_BYTES = 65536


def _unpatched_poll():
    """select.poll as the operating system gives it (a zero-timeout probe must not switch greenlets)."""
    try:
        from gevent import monkey

        if monkey.is_module_patched("select"):
            return monkey.get_original("select", "poll")
    except ImportError:
        pass
    import select

    return select.poll


_poll = _unpatched_poll()


class NotSent(Exception):
    """The request never left: the connection could not be made in time."""

    def __init__(self, timed_out: bool):
        super().__init__("connect timed out" if timed_out else "connect failed")
        self.timed_out = timed_out


class Broken(Exception):
    """The connection failed, closed or went silent after the request was (partly) sent."""

    def __init__(self, timed_out: bool, why: str = ""):
        super().__init__(why or ("read timed out" if timed_out else "connection broken"))
        self.timed_out = timed_out


class Headers(dict):
    """Response headers by lower-case name (repeated ones joined with ', ')."""

    def get(self, name, default=None):
        return super().get(name.lower(), default)

    def __getitem__(self, name):
        return super().__getitem__(name.lower())

    def __contains__(self, name):
        return super().__contains__(name.lower())


class Reply:
    """One answer: its status, headers and body."""

    __slots__ = ("status_code", "headers", "content", "url")

    def __init__(self, status_code: int, headers: Headers, content: bytes, url: str = ""):
        self.status_code, self.headers, self.content, self.url = status_code, headers, content, url

    def json(self):
        return json.loads(self.content)


class _Connection:
    __slots__ = ("sock", "buffer", "idle_since", "_probe")

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.idle_since = 0.0
        self._probe = None

    def still_good(self, now: float) -> bool:
        """Idle not too long, and nothing to read (a readable idle socket was closed by the server)."""
        if now - self.idle_since > KEEPALIVE_SECONDS:
            return False
        if self._probe is None:
            self._probe = _poll()
            self._probe.register(self.sock.fileno(), 1)  # POLLIN
        return not self._probe.poll(0)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Http1:
    """Requests to one origin (`base_url`, http or https) with fixed headers, on kept-alive connections."""

    def __init__(self, base_url: str, headers: dict[str, str], ssl_context: ssl.SSLContext | None = None):
        parts = urlsplit(base_url)
        self.https = parts.scheme == "https"
        self.host = parts.hostname or ""
        self.port = parts.port or (443 if self.https else 80)
        self.prefix = parts.path.rstrip("/")
        self.origin = f"{parts.scheme}://{parts.netloc}"
        host_header = self.host if parts.port is None else f"{self.host}:{parts.port}"
        fixed = {"Host": host_header, **headers}
        self._head_fields = "".join(f"{k}: {v}\r\n" for k, v in fixed.items())
        self._ssl = (ssl_context or ssl.create_default_context()) if self.https else None
        self._idle: collections.deque[_Connection] = collections.deque()

    def close(self) -> None:
        while self._idle:
            self._idle.pop().close()

    def request(self, method: str, target: str, body: bytes | None, timeout: float, connect_timeout: float) -> Reply:
        """Send one request (`target`: path and query under the base URL) and read its whole answer.
        (`open` and `Answer.reply` do the same in more steps: this is the call made most.)"""
        payload = self._payload(method, target, body, "")
        conn = self._connection(connect_timeout)
        try:
            status, headers, keep = self._send(conn, payload, timeout)
            content, reusable = self._whole_body(conn, method, status, headers)
        except (OSError, ValueError, Broken) as exc:
            raise _broken(conn, exc) from None
        if keep and reusable:
            self._keep(conn)
        else:
            conn.close()
        return Reply(status, headers, content, f"{self.origin}{self.prefix}{target}")

    def open(
        self, method: str, target: str, body: bytes | None, timeout: float, connect_timeout: float, accept: str = ""
    ) -> Answer:
        """Send one request and read the head of its answer; the body is read from the `Answer`
        (whole, or line by line as it comes), each read bounded by `timeout`."""
        payload = self._payload(method, target, body, accept)
        conn = self._connection(connect_timeout)
        with _failing(conn):
            status, headers, keep = self._send(conn, payload, timeout)
        return Answer(self, conn, method, status, headers, keep, f"{self.origin}{self.prefix}{target}")

    def _send(self, conn: _Connection, payload: bytes, timeout: float) -> tuple[int, Headers, bool]:
        """Send the request, each read after it bounded by `timeout`; the answer's head."""
        conn.sock.settimeout(timeout)
        conn.sock.sendall(payload)
        return self._head(conn)

    def _payload(self, method: str, target: str, body: bytes | None, accept: str) -> bytes:
        head = f"{method} {self.prefix}{target} HTTP/1.1\r\n{self._head_fields}"
        if accept:
            head += f"Accept: {accept}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        return (head + "\r\n").encode("latin-1") + (body or b"")

    def _keep(self, conn: _Connection) -> None:
        conn.idle_since = time.monotonic()
        self._idle.append(conn)
        while len(self._idle) > MAX_IDLE:
            self._idle.popleft().close()

    def _connection(self, connect_timeout: float) -> _Connection:
        """The most recently used idle connection that is still good, or a new one."""
        now = time.monotonic()
        while self._idle:
            try:
                conn = self._idle.pop()
            except IndexError:
                break
            if conn.still_good(now):
                return conn
            conn.close()
        try:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl is not None:
                sock = self._ssl.wrap_socket(sock, server_hostname=self.host)
        except TimeoutError:
            raise NotSent(timed_out=True) from None
        except OSError:
            raise NotSent(timed_out=False) from None
        return _Connection(sock)

    def _fill(self, conn: _Connection) -> None:
        chunk = conn.sock.recv(_READ_BYTES)
        if not chunk:
            raise Broken(timed_out=False, why="the connection closed before the answer's end")
        conn.buffer += chunk

    def _take(self, conn: _Connection, size: int) -> bytes:
        while len(conn.buffer) < size:
            self._fill(conn)
        taken, conn.buffer = conn.buffer[:size], conn.buffer[size:]
        return taken

    def _line(self, conn: _Connection) -> bytes:
        while (end := conn.buffer.find(b"\r\n")) < 0:
            if len(conn.buffer) > _MAX_HEAD_BYTES:
                raise Broken(timed_out=False, why="an answer line too long")
            self._fill(conn)
        line, conn.buffer = conn.buffer[:end], conn.buffer[end + 2 :]
        return line

    def _head(self, conn: _Connection) -> tuple[int, Headers, bool]:
        """The answer's status (1xx skipped), headers, and whether the connection may be kept."""
        while True:
            while (end := conn.buffer.find(b"\r\n\r\n")) < 0:
                if len(conn.buffer) > _MAX_HEAD_BYTES:
                    raise Broken(timed_out=False, why="an answer head too long")
                self._fill(conn)
            head, conn.buffer = conn.buffer[:end].decode("latin-1"), conn.buffer[end + 4 :]
            status_line, *fields = head.split("\r\n")
            version, _, rest = status_line.partition(" ")
            status = int(rest[:3])
            if status >= 200:
                break
        found: dict[str, str] = {}
        for field in fields:
            name, _, value = field.partition(":")
            name, value = name.strip().lower(), value.strip()
            found[name] = f"{found[name]}, {value}" if name in found else value
        headers = Headers(found)
        keep = version == "HTTP/1.1" and "close" not in dict.get(headers, "connection", "").lower()
        return status, headers, keep

    def _whole_body(self, conn: _Connection, method: str, status: int, headers: Headers) -> tuple[bytes, bool]:
        """The body read to its end, and whether the connection may carry another request."""
        length = dict.get(headers, "content-length")
        if length is not None and "transfer-encoding" not in headers and method != "HEAD" and status not in (204, 304):
            return self._take(conn, int(length)), True
        pieces, read = self._pieces(conn, method, status, headers), []
        while True:
            try:
                read.append(next(pieces))
            except StopIteration as end:
                return b"".join(read), bool(end.value)

    def _pieces(self, conn: _Connection, method: str, status: int, headers: Headers):
        """The body's bytes as they come; returns True at its end when the connection may carry another."""
        if method == "HEAD" or status in (204, 304):
            return True
        if "chunked" in dict.get(headers, "transfer-encoding", "").lower():
            while True:
                size = int(self._line(conn).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while self._line(conn):  # trailers, to the blank line
                        pass
                    return True
                yield self._take(conn, size)
                self._take(conn, 2)
        length = dict.get(headers, "content-length")
        if length is not None:
            left = int(length)
            while left > 0:
                if not conn.buffer:
                    self._fill(conn)
                piece, conn.buffer = conn.buffer[:left], conn.buffer[left:]
                left -= len(piece)
                yield piece
            return True
        while True:  # to the connection's end
            if conn.buffer:
                piece, conn.buffer = conn.buffer, b""
                yield piece
            chunk = conn.sock.recv(_READ_BYTES)
            if not chunk:
                return False
            conn.buffer += chunk


@contextlib.contextmanager
def _failing(conn: _Connection):
    """Socket failures as Broken (the connection closed): the request may have been received."""
    try:
        yield
    except (OSError, ValueError, Broken) as exc:
        raise _broken(conn, exc) from None


def _broken(conn: _Connection, exc: Exception) -> Broken:
    """The connection closed, and the failure as Broken."""
    conn.close()
    if isinstance(exc, Broken):
        return exc
    if isinstance(exc, TimeoutError):
        return Broken(timed_out=True)
    return Broken(timed_out=False, why=exc.__class__.__name__)


class Answer:
    """An answer whose head has been read: its body whole (`reply`) or line by line (`iter_lines`).
    Leaving it (`close`, or the `with` block) keeps the connection when the body was read to its end."""

    def __init__(self, client: Http1, conn: _Connection, method, status: int, headers: Headers, keep: bool, url):
        self.client, self.conn, self.keep, self.url = client, conn, keep, url
        self.status_code, self.headers = status, headers
        self._pieces = client._pieces(conn, method, status, headers)
        self._done = False

    def __enter__(self) -> Answer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _next_pieces(self):
        with _failing(self.conn):
            try:
                while True:
                    yield next(self._pieces)
            except StopIteration as end:
                self._done = True
                self.keep = self.keep and bool(end.value)

    def reply(self) -> Reply:
        """The whole body read now, as a Reply."""
        return Reply(self.status_code, self.headers, b"".join(self._next_pieces()), self.url)

    def read(self) -> bytes:
        return self.reply().content

    def json(self):
        return self.reply().json()

    def iter_lines(self):
        """The body's lines as they arrive (text, without their line ends)."""
        pending = b""
        for piece in self._next_pieces():
            pending += piece
            *lines, pending = pending.split(b"\n")
            for line in lines:
                yield line.rstrip(b"\r").decode("utf-8", errors="replace")
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", errors="replace")

    def close(self) -> None:
        if self.conn is None:
            return
        if self._done and self.keep:
            self.client._keep(self.conn)
        else:
            self.conn.close()
        self.conn = None

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
    __slots__ = ("sock", "buffer", "idle_since")

    def __init__(self, sock):
        self.sock = sock
        self.buffer = b""
        self.idle_since = 0.0

    def still_good(self, now: float) -> bool:
        """Idle not too long, and nothing to read (a readable idle socket was closed by the server)."""
        if now - self.idle_since > KEEPALIVE_SECONDS:
            return False
        probe = _poll()
        probe.register(self.sock.fileno(), 1)  # POLLIN
        return not probe.poll(0)

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
        """Send one request (`target`: path and query under the base URL) and read its answer."""
        head = f"{method} {self.prefix}{target} HTTP/1.1\r\n{self._head_fields}"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        elif method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: 0\r\n"
        payload = (head + "\r\n").encode("latin-1") + (body or b"")
        conn = self._connection(connect_timeout)
        try:
            conn.sock.settimeout(timeout)
            conn.sock.sendall(payload)
            reply, keep = self._read(conn, method)
        except TimeoutError:
            conn.close()
            raise Broken(timed_out=True) from None
        except (OSError, ValueError, Broken) as exc:
            conn.close()
            if isinstance(exc, Broken):
                raise
            raise Broken(timed_out=False, why=exc.__class__.__name__) from None
        if keep:
            conn.idle_since = time.monotonic()
            self._idle.append(conn)
            while len(self._idle) > MAX_IDLE:
                self._idle.popleft().close()
        else:
            conn.close()
        reply.url = f"{self.origin}{self.prefix}{target}"
        return reply

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

    def _read(self, conn: _Connection, method: str) -> tuple[Reply, bool]:
        """The answer (1xx skipped) and whether the connection may be kept."""
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
        headers = Headers()
        for field in fields:
            name, _, value = field.partition(":")
            name, value = name.strip().lower(), value.strip()
            headers[name] = f"{dict.get(headers, name)}, {value}" if name in headers else value
        keep = version == "HTTP/1.1" and "close" not in dict.get(headers, "connection", "").lower()
        if method == "HEAD" or status in (204, 304):
            return Reply(status, headers, b""), keep
        if "chunked" in dict.get(headers, "transfer-encoding", "").lower():
            return Reply(status, headers, self._chunked(conn)), keep
        length = dict.get(headers, "content-length")
        if length is not None:
            return Reply(status, headers, self._take(conn, int(length))), keep
        while True:  # to the connection's end
            chunk = conn.sock.recv(_READ_BYTES)
            if not chunk:
                return Reply(status, headers, conn.buffer), False
            conn.buffer += chunk

    def _chunked(self, conn: _Connection) -> bytes:
        parts = []
        while True:
            size = int(self._line(conn).split(b";", 1)[0].strip(), 16)
            if size == 0:
                while self._line(conn):  # trailers, to the blank line
                    pass
                return b"".join(parts)
            parts.append(self._take(conn, size))
            self._take(conn, 2)

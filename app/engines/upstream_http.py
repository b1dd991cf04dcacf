"""A lean client for the upstream's JSON API: one shared httpx2 client, no retries.

The hot calls of a wait (a look at a response, its event stream, a create that
must not be sent twice) go through here instead of the SDK: a call costs a
fraction of the CPU, and nothing is ever retried behind the caller's back.

    upstream = make_upstream(settings)
    data, headers = upstream.get("/responses/resp_1", timeout=2.0)
    data, headers = upstream.post("/responses", {...}, timeout=10.0)
    with upstream.stream("GET", "/responses/resp_1", params={"stream": "true"}, timeout=5.0) as events:
        for event in events:  # dicts from `data:` lines
            ...

The JSON calls (`get`, `post`, `delete`) and the event streams go over plain HTTP/1.1
on kept-alive sockets (app/engines/http1.py) unless a test transport or a proxy is
configured; uploads (and those cases) through httpx2.

Every failure is one of the engine errors of `app.contract` (`upstream_errors`
translates them), whose `maybe_sent` is False only when the upstream surely did
not act on the request (it was never sent: connect error or timeout, pool
timeout; or it was refused with a 4xx). A create whose error says `maybe_sent`
must not be sent again.

CPU per poll, this process (bench/poll_cost.py, fake upstream on gunicorn+gevent):
the SDK's with_raw_response.retrieve ~0.49 ms, `get` ~0.30 ms; with 2000 streams
open, `get` stays ~0.26 ms, where one shared pool would cost ~3 ms per call.
Build one per process (after a fork): it holds sockets.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlencode, urlsplit

import httpx2

from app.contract import UpstreamTransient
from app.engines import http1
from app.engines.client import offline_transport
from app.engines.upstream_errors import status_error, transport_error
from app.redaction import redact
from app.settings import Settings

DEFAULT_BASE_URL = "https://api.openai.com/v1"
CONNECT_SECONDS = 5.0
# No bound on open connections: every waiting stream holds one, and a bound would
# turn a burst into pool timeouts. Few idle ones: before and after each request
# the pool probes every idle connection (about 3 us of CPU each per request), so
# a large idle pool left by a burst makes every later call slower.
LIMITS = httpx2.Limits(max_connections=None, max_keepalive_connections=32, keepalive_expiry=5.0)
# The pool also walks every open connection and pending request twice per request:
# with 1000 streams open in one pool a poll costs ~1.6 ms of CPU instead of ~0.3
# (bench/poll_cost.py --streams). So streams get pools of their own, several of
# them, each holding a share of the streams; JSON calls keep a pool of short calls.
STREAM_POOLS = 16
USER_AGENT = "assistants-backend"


class UpstreamHTTP:
    """GET, POST, DELETE and SSE streams on the upstream, each bounded by its own timeout."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        transport=None,
        limits: httpx2.Limits = LIMITS,
        stream_pools: int = STREAM_POOLS,
    ):
        self._key = api_key
        ssl_context = httpx2.create_ssl_context()  # loaded once, shared by every pool

        def pool():
            return httpx2.Client(
                base_url=base_url.rstrip("/"),
                headers={"Authorization": f"Bearer {api_key}", "Accept": "application/json"},
                transport=transport,
                limits=limits,
                verify=ssl_context,
                timeout=httpx2.Timeout(10.0, connect=CONNECT_SECONDS),
                follow_redirects=False,
            )

        self._client = pool()
        self._http1 = None
        self._base_url = base_url.rstrip("/")
        if transport is None and not _proxied(base_url):
            headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json", "User-Agent": USER_AGENT}
            self._http1 = http1.Http1(base_url.rstrip("/"), headers, ssl_context)
        self._stream_clients = [pool() for _ in range(max(1, stream_pools))]
        self._next_stream_client = itertools.cycle(self._stream_clients).__next__

    def close(self) -> None:
        for client in (self._client, *self._stream_clients):
            client.close()
        if self._http1 is not None:
            self._http1.close()

    def get(self, path: str, params: dict | None = None, *, timeout: float = 10.0, what: str = "") -> tuple:
        """The JSON answer and its headers."""
        return self._call("GET", path, None, params, timeout, what)

    def post(self, path: str, body: dict | None = None, *, timeout: float = 10.0, what: str = "") -> tuple:
        return self._call("POST", path, body, None, timeout, what)

    def delete(self, path: str, *, timeout: float = 10.0, what: str = "") -> tuple:
        return self._call("DELETE", path, None, None, timeout, what)

    def upload(self, path: str, fields: dict, file: tuple, *, timeout: float = 60.0, what: str = "") -> tuple:
        """A multipart/form-data POST of `fields` and `file` (filename, binary stream, content type),
        the stream sent in chunks as it is read; the JSON answer and its headers."""
        what = what or f"POST {path} (upload)"
        with self._translated(what):
            response = self._client.post(path, data=fields, files={"file": file}, timeout=_timeout(timeout))
        return self._answer(response, what)

    def _call(self, method, path, body, params, timeout, what):
        what = what or f"{method} {path}"
        if self._http1 is not None:
            return self._answer(self._plain_call(method, path, body, params, timeout, what), what)
        with self._translated(what):
            response = self._client.request(method, path, json=body, params=params, timeout=_timeout(timeout))
        return self._answer(response, what)

    def _plain_call(self, method, path, body, params, timeout, what) -> http1.Reply:
        """The call over http1: its answer, or the engine error of a connection that failed."""
        target = f"{path}?{urlencode(params)}" if params else path
        data = None if body is None else json.dumps(body).encode()
        seconds = max(0.001, float(timeout))
        with self._translated(what, f"{self._base_url}{path}"):  # the log's address_of keeps no query
            return self._http1.request(method, target, data, seconds, min(seconds, CONNECT_SECONDS))

    def _answer(self, response, what):
        """The JSON answer and its headers, or the engine error of a failed one."""
        if response.status_code >= 400:
            self._raise_status(response, what)
        try:
            return response.json(), response.headers
        except ValueError:
            raise UpstreamTransient(
                f"{what}: the upstream's answer is not JSON", status=response.status_code, maybe_sent=True
            ) from None

    @contextlib.contextmanager
    def stream(
        self,
        method: str,
        path: str,
        body: dict | None = None,
        params: dict | None = None,
        *,
        timeout: float = 10.0,
        what: str = "",
        skip: set[str] | frozenset[str] = frozenset(),
    ) -> Iterator[Iterator[dict]]:
        """The parsed events of an SSE answer; `timeout` bounds each wait for more bytes.

        Comments and `[DONE]` are skipped; events of unknown types are yielded like the
        others. An event whose `event:` line names one in `skip` is passed over unparsed
        (the caller may change the set while reading). A drop or silence while reading
        raises UpstreamTransient (maybe_sent=True).
        """
        what = what or f"{method} {path} (stream)"
        if self._http1 is not None:
            with self._plain_stream(method, path, body, params, timeout, what, skip) as events:
                yield events
            return
        headers = {"Accept": "text/event-stream"}
        client = self._next_stream_client()
        with self._translated(what):
            request = client.build_request(
                method, path, json=body, params=params, headers=headers, timeout=_timeout(timeout)
            )
            response = client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                with self._translated(what):
                    response.read()
                self._raise_status(response, what)
            yield self._events(response, what, skip=skip)
        finally:
            response.close()

    @contextlib.contextmanager
    def _plain_stream(self, method, path, body, params, timeout, what, skip):
        """`stream` over http1: one socket per stream, kept for another call if read to its end."""
        target = f"{path}?{urlencode(params)}" if params else path
        data = None if body is None else json.dumps(body).encode()
        seconds = max(0.001, float(timeout))
        url = f"{self._base_url}{path}"
        with self._translated(what, url):
            answer = self._http1.open(method, target, data, seconds, min(seconds, CONNECT_SECONDS), "text/event-stream")
        try:
            if answer.status_code >= 400:
                with self._translated(what, url):
                    reply = answer.reply()
                self._raise_status(reply, what)
            yield self._events(answer, what, url, skip)
        finally:
            answer.close()

    def _events(self, response, what, url=None, skip=frozenset()):
        name = ""  # the current event's `event:` line
        with self._translated(what, url):
            for line in response.iter_lines():
                if line.startswith("event:"):
                    name = line[6:].strip()
                    continue
                if not line.startswith("data:"):
                    if not line:
                        name = ""  # the event's end
                    continue  # comment (`:`), id:, retry:
                if name in skip:
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    continue
                try:
                    event = json.loads(data)
                except ValueError:
                    raise UpstreamTransient(f"{what}: an event is not JSON", maybe_sent=True) from None
                if isinstance(event, dict):
                    yield event

    @contextlib.contextmanager
    def _translated(self, what, url=None):
        """Transport errors as UpstreamTransient, without the exception's own text."""
        try:
            yield
        except http1.NotSent as exc:
            raise transport_error(what, exc, timed_out=exc.timed_out, detail=" (ConnectError)", url=url) from None
        except http1.Broken as exc:
            raise transport_error(what, exc, timed_out=exc.timed_out, detail=" (ReadError)", url=url) from None
        except httpx2.TimeoutException as exc:
            raise transport_error(what, exc, timed_out=True, url=_request_url(exc)) from None
        except httpx2.TransportError as exc:
            detail = f" ({exc.__class__.__name__})"
            raise transport_error(what, exc, timed_out=False, detail=detail, url=_request_url(exc)) from None

    def _raise_status(self, response: httpx2.Response, what: str):
        """Translate a 4xx/5xx answer, as the SDK path does (upstream_errors.status_error)."""
        try:
            parsed = response.json()
        except ValueError:
            parsed = None
        error = parsed.get("error", parsed) if isinstance(parsed, dict) else parsed
        error = dict(error) if isinstance(error, dict) else None
        if error and isinstance(error.get("message"), str):
            # Before the translation, which may log the message (a 401 echoing the key).
            error["message"] = redact(error["message"], (self._key,))
        status = response.status_code
        exc = status_error(what, status, error, response.headers, fallback=f"Error code: {status}", url=response.url)
        if self._key and self._key in str(exc):
            exc.args = (redact(str(exc), (self._key,)),)
        raise exc


def _proxied(base_url: str) -> bool:
    """Whether the environment sends calls to this URL through a proxy (then httpx2 takes them all)."""
    proxies = urllib.request.getproxies_environment()
    scheme, host = urlsplit(base_url).scheme, urlsplit(base_url).hostname or ""
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass_environment(host, proxies)


def _request_url(exc: httpx2.TransportError):
    try:
        return exc.request.url
    except RuntimeError:  # no request attached
        return None


def _timeout(seconds: float) -> httpx2.Timeout:
    seconds = max(0.001, float(seconds))
    return httpx2.Timeout(seconds, connect=min(seconds, CONNECT_SECONDS))


def make_upstream(
    settings: Settings, offline: httpx2.WSGITransport | None = None, *, stream_pools: int = STREAM_POOLS
) -> UpstreamHTTP:
    """The client for the configured upstream; `offline`: the transport the SDK client uses offline;
    `stream_pools`: 1 for a client that never streams."""
    if settings.offline:
        transport = offline or offline_transport()
        return UpstreamHTTP("http://offline.invalid/v1", "offline", transport=transport, stream_pools=stream_pools)
    return UpstreamHTTP(
        settings.openai_base_url or DEFAULT_BASE_URL,
        settings.openai_api_key or "unused-local-upstream",
        stream_pools=stream_pools,
    )

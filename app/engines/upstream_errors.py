"""The one translation of the upstream's errors into the engine errors of `app.contract`.

Both ways to the upstream use it: the lean client (`upstream_http`) and the SDK
(`client.translated_errors`). Nothing above the engines sees an HTTP status, an
SDK type or an upstream message that might carry a key.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

import httpx2

from app.contract import (
    UpstreamBusy,
    UpstreamConfigError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTransient,
)
from app.redaction import redact

log = logging.getLogger("app.upstream")

# Transport errors after which the request surely did not reach the upstream.
NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.UnsupportedProtocol)


# One log line per address and cause this often at most: a down upstream fails every poll.
LOG_EVERY_SECONDS = 30.0
_last_logged: dict[tuple[str, str], float] = {}
_log_lock = threading.Lock()


def address_of(url) -> str:
    """scheme://host[:port]/path of an upstream URL: never its query (or anything else a key could hide in)."""
    try:
        parts = urlsplit(str(url))
    except ValueError:
        return "an unparsable address"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def cause_of(exc: BaseException | None, timed_out: bool) -> str:
    """In words, why a request did not get an answer: refused, timed out, TLS, name, reset."""
    chain = list(_chain(exc))
    if any(isinstance(e, ssl.SSLError) for e in chain) or any("SSL" in str(e) for e in chain):
        return "TLS error (certificate or protocol)"
    if any(isinstance(e, socket.gaierror) for e in chain) or any(
        "Name or service not known" in str(e) or "nodename nor servname" in str(e) for e in chain
    ):
        return "the host name does not resolve"
    if timed_out:
        if any(isinstance(e, (httpx2.ConnectTimeout, httpx2.PoolTimeout)) for e in chain):
            return "timed out connecting"
        return "timed out waiting for the answer"
    if any(isinstance(e, ConnectionRefusedError) or "refused" in str(e).lower() for e in chain):
        return "connection refused"
    if any(isinstance(e, httpx2.ConnectError) for e in chain):
        return "could not connect"
    return "the connection broke before the answer"


def _log_once_in_a_while(address: str, cause: str, what: str) -> None:
    now = time.monotonic()
    with _log_lock:
        if now - _last_logged.get((address, cause), -LOG_EVERY_SECONDS) < LOG_EVERY_SECONDS:
            return
        _last_logged[(address, cause)] = now
    log.warning("%s: the upstream at %s could not be reached: %s", what, address, cause)


def transport_error(
    what: str, cause: BaseException | None, timed_out: bool, detail: str = "", url=None
) -> UpstreamTransient:
    """A timeout or connection error (`cause`, the transport's), without the exception's own
    text; `maybe_sent` unless the request surely never left. The log names the address
    (`url`'s, never a key) and the cause, once in a while."""
    reason = cause_of(cause, timed_out)
    if url is not None:
        _log_once_in_a_while(address_of(url), reason, what)
    text = "the upstream did not answer in time" if timed_out else f"could not reach the upstream{detail}"
    return UpstreamTransient(f"{what}: {text} ({reason})", maybe_sent=not isinstance(cause, NOT_SENT))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    raw = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def status_error(
    what: str, status: int, body, headers: Mapping[str, str] | None, fallback: str | None = None, url=None
) -> UpstreamError:
    """The engine error of an upstream answer with HTTP `status` (400 or more).

    `body` is the answer's error object (the JSON's `error`, or the JSON itself); its
    message, redacted, says why, else `fallback`. `maybe_sent` is true only for a 5xx:
    a refusal (4xx) surely did nothing.
    """
    fields = body if isinstance(body, dict) else {}
    error = fields.get("error", fields) if isinstance(fields.get("error", fields), dict) else {}
    message = redact(str(error.get("message") or fallback or "no message"))
    code, param = fields.get("code"), fields.get("param")
    sent = status >= 500
    if status == 429 or status >= 500:
        return UpstreamTransient(
            f"{what}: upstream {status}: {message}",
            status=status,
            retry_after=_retry_after(headers),
            maybe_sent=sent,
            param=param,
        )
    if status in (401, 403):
        where = f" at {address_of(url)}" if url is not None else ""
        log.error("%s: the upstream%s rejected the key or permissions (%s): %s", what, where, status, message)
        return UpstreamConfigError(f"{what}: upstream {status}", status=status, maybe_sent=sent, param=param)
    if status == 404:
        if "assistant" in message.lower():
            log.error("%s: upstream does not know the configured assistant: %s", what, message)
            return UpstreamConfigError(f"{what}: unknown assistant", status=status, maybe_sent=sent, param=param)
        return UpstreamNotFound(f"{what}: {message}", status=status, maybe_sent=sent, param=param)
    # Responses: HTTP 400 `conversation_locked` (param `conversation`); Assistants: a 400 in words.
    if code == "conversation_locked" or "while a run" in message or "already has an active run" in message:
        return UpstreamBusy(message, status=status, maybe_sent=sent, param=param)
    return UpstreamRejected(f"{what}: {message}", status=status, maybe_sent=sent, param=param)

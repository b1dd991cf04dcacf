"""The one translation of the upstream's errors into the engine errors of `app.contract`.

Both ways to the upstream use it: the lean client (`upstream_http`) and the SDK
(`client.translated_errors`). Nothing above the engines sees an HTTP status, an
SDK type or an upstream message that might carry a key.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

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


def transport_error(what: str, cause: BaseException | None, timed_out: bool, detail: str = "") -> UpstreamTransient:
    """A timeout or connection error (`cause`, the transport's), without the exception's own
    text; `maybe_sent` unless the request surely never left."""
    text = "the upstream did not answer in time" if timed_out else f"could not reach the upstream{detail}"
    return UpstreamTransient(f"{what}: {text}", maybe_sent=not isinstance(cause, NOT_SENT))


def _retry_after(headers: Mapping[str, str] | None) -> float | None:
    raw = headers.get("retry-after") if headers is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def status_error(
    what: str, status: int, body, headers: Mapping[str, str] | None, fallback: str | None = None
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
        log.error("%s: upstream rejected the key or permissions (%s): %s", what, status, message)
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

"""The one OpenAI SDK client per process, and the translation of its errors.

The SDK's exceptions become the engine errors of `base`, so nothing above the
engines ever sees an SDK type or an upstream message that might carry a key.
"""

from __future__ import annotations

import contextlib
import logging

import httpx2
import openai

from app.contract import (
    UpstreamBusy,
    UpstreamConfigError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTransient,
)
from app.redaction import redact
from app.settings import Settings

log = logging.getLogger("app.upstream")

OFFLINE_LABEL = "[offline upstream]"
# A look at a run, and a cancel, must come back quickly: the wait's deadline,
# and the cancel grace after it, can only be kept if no single call outlasts this.
QUICK_CALL_SECONDS = 2.0


def offline_transport() -> httpx2.WSGITransport:
    """The in-process offline upstream; the SDK and the lean client must share one."""
    from fake_openai import create_fake_app

    return httpx2.WSGITransport(app=create_fake_app(default_duration=1.0, label=OFFLINE_LABEL))


def make_client(settings: Settings, offline: httpx2.WSGITransport | None = None) -> openai.OpenAI:
    """The SDK client for the configured upstream (the in-process offline one included)."""
    options = dict(max_retries=2, timeout=httpx2.Timeout(settings.upstream_timeout_seconds, connect=5.0))
    if settings.offline:
        return openai.OpenAI(
            api_key="offline",
            base_url="http://offline.invalid/v1",
            http_client=httpx2.Client(transport=offline or offline_transport()),
            **options,
        )
    # Few idle connections: the pool checks each one before every request, so a large
    # idle pool left by a burst makes every later poll slower.
    limits = httpx2.Limits(max_connections=None, max_keepalive_connections=32)
    return openai.OpenAI(
        api_key=settings.openai_api_key or "unused-local-upstream",
        base_url=settings.openai_base_url,
        http_client=httpx2.Client(limits=limits),
        **options,
    )


def quick_client(client: openai.OpenAI) -> openai.OpenAI:
    """The client for polls and cancels: no retries of its own (the waiter retries) and a short timeout."""
    seconds = min(client.timeout.read or QUICK_CALL_SECONDS, QUICK_CALL_SECONDS)
    return client.with_options(max_retries=0, timeout=httpx2.Timeout(seconds, connect=seconds))


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body.get("error", body), dict) else {}
    return redact(str(error.get("message") or exc.message or "no message"))


def _retry_after(exc: openai.APIStatusError) -> float | None:
    raw = exc.response.headers.get("retry-after") if exc.response is not None else None
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


# Transport errors after which the request surely did not reach the upstream.
NOT_SENT = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout, httpx2.UnsupportedProtocol)


def _marked(exc: UpstreamError, maybe_sent: bool) -> UpstreamError:
    exc.maybe_sent = maybe_sent
    return exc


@contextlib.contextmanager
def translated_errors(what: str):
    """Turn SDK exceptions raised inside into the engine's own errors, with `maybe_sent`
    (False only when the upstream surely did not act: never sent, or refused with a 4xx)."""
    try:
        yield
    except openai.APITimeoutError as exc:
        sent = not isinstance(exc.__cause__, NOT_SENT)
        raise _marked(UpstreamTransient(f"{what}: the upstream did not answer in time"), sent) from None
    except openai.APIConnectionError as exc:
        sent = not isinstance(exc.__cause__, NOT_SENT)
        raise _marked(UpstreamTransient(f"{what}: could not reach the upstream"), sent) from None
    except openai.APIStatusError as exc:
        error = _translated_status(what, exc)
        error.param = exc.body.get("param") if isinstance(exc.body, dict) else None
        raise _marked(error, exc.status_code >= 500) from None


def _translated_status(what: str, exc: openai.APIStatusError) -> UpstreamError:
    status = exc.status_code
    message = _upstream_message(exc)
    code = (exc.body or {}).get("code") if isinstance(exc.body, dict) else None
    if status == 429 or status >= 500:
        return UpstreamTransient(f"{what}: upstream {status}: {message}", status=status, retry_after=_retry_after(exc))
    if status in (401, 403):
        log.error("%s: upstream rejected the key or permissions (%s): %s", what, status, message)
        return UpstreamConfigError(f"{what}: upstream {status}", status=status)
    if status == 404:
        if "assistant" in message.lower():
            log.error("%s: upstream does not know the configured assistant: %s", what, message)
            return UpstreamConfigError(f"{what}: unknown assistant", status=status)
        return UpstreamNotFound(f"{what}: {message}", status=status)
    # Responses: HTTP 400 `conversation_locked` (param `conversation`); Assistants: a 400 in words.
    if code == "conversation_locked" or "while a run" in message or "already has an active run" in message:
        return UpstreamBusy(message, status=status)
    return UpstreamRejected(f"{what}: {message}", status=status)

"""The one OpenAI SDK client per process, and the translation of its errors.

The SDK's exceptions become the engine errors of `base`, so nothing above the
engines ever sees an SDK type or an upstream message that might carry a key.
"""

from __future__ import annotations

import contextlib
import logging

import httpx2
import openai

from app.contract import UpstreamBusy, UpstreamConfigError, UpstreamNotFound, UpstreamRejected, UpstreamTransient
from app.redaction import redact
from app.settings import Settings

log = logging.getLogger("app.upstream")

OFFLINE_LABEL = "[offline upstream]"
# A look at a run, and a cancel, must come back quickly: the wait's deadline,
# and the cancel grace after it, can only be kept if no single call outlasts this.
QUICK_CALL_SECONDS = 2.0


def make_client(settings: Settings) -> openai.OpenAI:
    """The SDK client for the configured upstream (the in-process offline one included)."""
    options = dict(max_retries=2, timeout=httpx2.Timeout(settings.upstream_timeout_seconds, connect=5.0))
    if settings.offline:
        from fake_openai import create_fake_app

        fake = create_fake_app(default_duration=1.0, label=OFFLINE_LABEL)
        transport = httpx2.WSGITransport(app=fake)
        return openai.OpenAI(
            api_key="offline",
            base_url="http://offline.invalid/v1",
            http_client=httpx2.Client(transport=transport),
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


@contextlib.contextmanager
def translated_errors(what: str):
    """Turn SDK exceptions raised inside into the engine's own errors."""
    try:
        yield
    except openai.APITimeoutError:
        raise UpstreamTransient(f"{what}: the upstream did not answer in time") from None
    except openai.APIConnectionError:
        raise UpstreamTransient(f"{what}: could not reach the upstream") from None
    except openai.APIStatusError as exc:
        status = exc.status_code
        message = _upstream_message(exc)
        code = (exc.body or {}).get("code") if isinstance(exc.body, dict) else None
        if status == 429 or status >= 500:
            raise UpstreamTransient(
                f"{what}: upstream {status}: {message}", status=status, retry_after=_retry_after(exc)
            ) from None
        if status in (401, 403):
            log.error("%s: upstream rejected the key or permissions (%s): %s", what, status, message)
            raise UpstreamConfigError(f"{what}: upstream {status}", status=status) from None
        if status == 404:
            if "assistant" in message.lower():
                log.error("%s: upstream does not know the configured assistant: %s", what, message)
                raise UpstreamConfigError(f"{what}: unknown assistant", status=status) from None
            raise UpstreamNotFound(f"{what}: {message}", status=status) from None
        if code == "conversation_locked" or "while a run" in message or "already has an active run" in message:
            raise UpstreamBusy(message, status=status) from None
        raise UpstreamRejected(f"{what}: {message}", status=status) from None

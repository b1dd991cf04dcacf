"""The one OpenAI SDK client per process, and its errors as engine errors (`upstream_errors`)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import httpx2
import openai

from app.contract import UpstreamTransient
from app.engines.upstream_errors import status_error, transport_error
from app.settings import Settings

log = logging.getLogger("app.upstream")

OFFLINE_LABEL = "[offline upstream]"
EXAMPLE_KNOWLEDGE = Path(__file__).resolve().parents[2] / "examples" / "knowledge"
# A look at a run, and a cancel, must come back quickly: the wait's deadline,
# and the cancel grace after it, can only be kept if no single call outlasts this.
QUICK_CALL_SECONDS = 2.0


def offline_transport() -> httpx2.WSGITransport:
    """The in-process offline upstream; the SDK and the lean client must share one. It holds the
    example knowledge of examples/knowledge/ in the vector store `vs_offline_examples`."""
    from fake_openai import create_fake_app
    from fake_openai.seed import seed_knowledge

    upstream = create_fake_app(default_duration=1.0, label=OFFLINE_LABEL)
    seed_knowledge(upstream.fake, EXAMPLE_KNOWLEDGE)
    return httpx2.WSGITransport(app=upstream)


class NotTheApi(Exception):
    """A success answer that is not the API's JSON (a proxy's or a wrong server's page)."""

    def __init__(self, status: int, content_type: str):
        super().__init__(f"HTTP {status} with {content_type or 'no content type'}")
        self.status = status


def _require_json(response: httpx2.Response) -> None:
    """The SDK would hand a page that is not JSON back as a string: refuse it here."""
    content_type = response.headers.get("content-type", "")
    if response.status_code < 400 and "json" not in content_type and "event-stream" not in content_type:
        raise NotTheApi(response.status_code, content_type.split(";")[0])


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
        http_client=httpx2.Client(limits=limits, event_hooks={"response": [_require_json]}),
        **options,
    )


def quick_client(client: openai.OpenAI) -> openai.OpenAI:
    """The client for polls and cancels: no retries of its own (the waiter retries) and a short timeout."""
    seconds = min(client.timeout.read or QUICK_CALL_SECONDS, QUICK_CALL_SECONDS)
    return client.with_options(max_retries=0, timeout=httpx2.Timeout(seconds, connect=seconds))


@contextlib.contextmanager
def translated_errors(what: str):
    """Turn SDK exceptions raised inside into the engine's own errors (upstream_errors)."""
    try:
        yield
    except openai.APITimeoutError as exc:
        raise transport_error(what, exc.__cause__, timed_out=True, url=_url(exc)) from None
    except NotTheApi as exc:
        raise UpstreamTransient(f"{what}: the upstream's answer is not JSON ({exc})", status=exc.status) from None
    except openai.APIConnectionError as exc:
        if isinstance(exc.__cause__, NotTheApi):
            raise UpstreamTransient(
                f"{what}: the upstream's answer is not JSON ({exc.__cause__})", status=exc.__cause__.status
            ) from None
        raise transport_error(what, exc.__cause__, timed_out=False, url=_url(exc)) from None
    except openai.APIStatusError as exc:
        headers = exc.response.headers if exc.response is not None else None
        raise status_error(what, exc.status_code, exc.body, headers, fallback=exc.message, url=_url(exc)) from None


def _url(exc: openai.APIError):
    """The URL of the request an SDK error is about, if it tells."""
    request = getattr(exc, "request", None)
    return getattr(request, "url", None)

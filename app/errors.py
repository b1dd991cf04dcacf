"""Errors as exceptions with an HTTP status, raised where they are known (app.api.errors answers them)."""

from __future__ import annotations

from app.contract import (
    UpstreamBusy,
    UpstreamConfigError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTransient,
)
from app.redaction import redact

# Answers that a client's automatic retry cannot improve (the SDKs retry 408,
# 409 and 5xx, which for a run would start it again).
NO_RETRY = {"x-should-retry": "false"}
UPSTREAM_RETRY_AFTER_SECONDS = 5


class ApiError(Exception):
    """An error answer: status, a message a person can act on, and extras."""

    def __init__(self, status: int, message: str, *, headers: dict | None = None, **extra):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.extra = extra


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, f"No {kind} found with id '{object_id}'.")


def thread_busy(thread_id: str, run_id: str | None = None) -> ApiError:
    active = f" {run_id}" if run_id else ""
    return ApiError(
        409,
        f"Thread {thread_id} already has an active run{active}; wait for it to finish, then try again.",
        headers=NO_RETRY,
    )


def _transient_reason(exc: UpstreamTransient) -> str:
    """What the client is told of a passing upstream failure: unreachable, rate-limited or failing."""
    if exc.status is None:
        return "The upstream could not be reached (no answer from it); try again later."
    if exc.status < 400:
        return "The upstream answered with something that is not its API; try again later."
    if exc.status == 429:
        return "The upstream is rate-limiting this server; try again later."
    return f"The upstream failed (HTTP {exc.status}); try again later."


def upstream_lost(thread_id: str, run_id: str | None = None) -> ApiError:
    """The upstream no longer knows a thread or run the backend knows (it was reset, or its data
    expired): an upstream error, not the 404 of a thread that does not exist."""
    what = f"run {run_id} of thread {thread_id}" if run_id else f"thread {thread_id}"
    return ApiError(
        502,
        f"The upstream no longer knows {what} (it may have been reset or have dropped it); "
        "start a new thread to go on.",
        headers=NO_RETRY,
    )


def from_upstream(exc: UpstreamError) -> ApiError:
    """The contract's answer to an upstream failure."""
    if isinstance(exc, UpstreamNotFound):
        return ApiError(404, redact(str(exc).split(": ", 1)[-1]))
    if isinstance(exc, UpstreamBusy):
        return ApiError(
            409, "The thread already has an active run; wait for it to finish, then try again.", headers=NO_RETRY
        )
    if isinstance(exc, UpstreamConfigError):
        return ApiError(
            502,
            "Bad upstream configuration: the upstream rejected this backend's key or assistant; see the server log.",
            headers=NO_RETRY,
        )
    if isinstance(exc, UpstreamTransient):
        retry_after = max(1, round(exc.retry_after or UPSTREAM_RETRY_AFTER_SECONDS))
        return ApiError(503, _transient_reason(exc), headers={**NO_RETRY, "Retry-After": str(retry_after)})
    if isinstance(exc, UpstreamRejected):
        return ApiError(400, redact(str(exc)))
    return ApiError(502, "Unexpected upstream error; see the server log.", headers=NO_RETRY)

"""Errors as exceptions with an HTTP status, turned into JSON in one place."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app.engines.base import (
    UpstreamBusy,
    UpstreamConfigError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTransient,
)
from app.redaction import redact

log = logging.getLogger("app.errors")

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
        return ApiError(
            503,
            "The upstream is unavailable or rate-limited; try again later.",
            headers={**NO_RETRY, "Retry-After": str(retry_after)},
        )
    if isinstance(exc, UpstreamRejected):
        return ApiError(400, redact(str(exc)))
    return ApiError(502, "Unexpected upstream error; see the server log.", headers=NO_RETRY)


def _answer(error: ApiError):
    response = jsonify({"error": error.message, **error.extra})
    response.status_code = error.status
    response.headers.update(error.headers)
    return response


def init_app(app: Flask) -> None:
    """Register the handlers that make every error a JSON body."""

    @app.errorhandler(ApiError)
    def api_error(error: ApiError):
        return _answer(error)

    @app.errorhandler(UpstreamError)
    def upstream_error(error: UpstreamError):
        log.warning("upstream error: %s", redact(str(error)))
        return _answer(from_upstream(error))

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        messages = {
            404: "Not found: no such route.",
            405: "Method not allowed on this route.",
            413: "Request body too large.",
        }
        answer = ApiError(error.code or 500, messages.get(error.code, error.description or error.name))
        response = _answer(answer)
        if error.code == 405 and error.valid_methods:
            response.headers["Allow"] = ", ".join(error.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception):
        log.exception("unhandled error")
        return _answer(ApiError(500, "Internal error; see the server log.", headers=NO_RETRY))

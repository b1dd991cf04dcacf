"""Every error answer as JSON, made in one place: the contract's shape, or OpenAI's under /v1."""

from __future__ import annotations

import logging

import sqlalchemy as sa
from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app import metrics
from app.api import v1_dialect
from app.contract import UpstreamError
from app.errors import NO_RETRY, ApiError, from_upstream
from app.redaction import redact
from app.store.guard import StorageUnavailable

log = logging.getLogger("app.errors")

# Database failures that say the storage cannot be used now (down, read-only, deleted, full, pool exhausted),
# not that a query is wrong: answered 503, and the pool reconnects once the storage is back.
STORAGE_FAULTS = (
    StorageUnavailable,
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.DisconnectionError,
    sa.exc.TimeoutError,
)
STORAGE_RETRY_AFTER_SECONDS = 2


def storage_unavailable(error: Exception) -> ApiError:
    """The answer to a database failure, logged with its cause (never the statement or its values)."""
    cause = getattr(error, "orig", None) or error
    reason = (str(cause).strip().splitlines() or [cause.__class__.__name__])[0]
    log.warning("database unavailable: %s: %s", cause.__class__.__name__, redact(reason))
    metrics.storage_error()
    return ApiError(
        503,
        "The database is unavailable; try again later.",
        headers={**NO_RETRY, "Retry-After": str(STORAGE_RETRY_AFTER_SECONDS)},
    )


def _answer(error: ApiError):
    body = v1_dialect.error_body(error) if v1_dialect.under_v1() else {"error": error.message, **error.extra}
    response = jsonify(body)
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

    for fault in STORAGE_FAULTS:
        app.register_error_handler(fault, lambda error: _answer(storage_unavailable(error)))

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

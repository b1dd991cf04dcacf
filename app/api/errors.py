"""Every error answer as JSON, made in one place: the contract's shape, or OpenAI's under /v1."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from werkzeug.exceptions import HTTPException

from app.api import v1_dialect
from app.contract import UpstreamError
from app.errors import NO_RETRY, ApiError, from_upstream
from app.redaction import redact

log = logging.getLogger("app.errors")


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

"""`Idempotency-Key`: a repeat from the same user within 24 hours gets the first answer again."""

from __future__ import annotations

import functools
import hashlib
import json

from flask import Response, g, request

from app.api import services, v1_dialect
from app.errors import ApiError

REPLAYED_HEADERS = ("Content-Type", "x-should-retry", "openai-poll-after-ms")
# Answers that started nothing: the key is released so that a retry can run.
NOTHING_STARTED = (429, 503)
STREAMED_MESSAGE = (
    "The request with this Idempotency-Key was answered with a stream, which cannot be replayed; "
    "read the thread's runs and messages instead."
)
STREAMED_HEADERS = {"Content-Type": "application/json", "x-should-retry": "false"}


def _fingerprint() -> str:
    digest = hashlib.sha256(request.get_data(cache=True)).hexdigest()
    return f"{request.method} {request.path} {digest}"


def _replay(claimed: dict, fingerprint: str) -> Response:
    if claimed["fingerprint"] != fingerprint:
        raise ApiError(422, "This Idempotency-Key was used with a different request.")
    if claimed["status_code"] is None:
        raise ApiError(
            409, "A request with this Idempotency-Key is still being answered.", headers={"Retry-After": "1"}
        )
    response = Response(claimed["body"], status=claimed["status_code"], headers=json.loads(claimed["headers"]))
    response.headers["Idempotent-Replayed"] = "true"
    return response


def idempotent(view):
    """Answer a repeated Idempotency-Key from the record instead of calling `view` again."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        key = request.headers.get("Idempotency-Key")
        if key is None:
            return view(*args, **kwargs)
        if not 1 <= len(key) <= 255:
            raise ApiError(400, "Idempotency-Key must be 1-255 characters.")
        b = services()
        records = b.records
        fingerprint = _fingerprint()
        claimed = records.claim_idempotency_key(g.user, key, fingerprint, b.settings.run_timeout_seconds + 60)
        if claimed is not None:
            return _replay(claimed, fingerprint)
        try:
            response = view(*args, **kwargs)
        except ApiError as error:
            if error.status in NOTHING_STARTED or error.status < 500:
                records.release_idempotency_key(g.user, key)
            raise
        except Exception:
            records.release_idempotency_key(g.user, key)
            raise
        if response.is_streamed:
            # A stream cannot be replayed; a repeat learns that the run was started.
            body = {"error": STREAMED_MESSAGE}
            if v1_dialect.under_v1():
                body = v1_dialect.error_body(ApiError(409, STREAMED_MESSAGE))
            records.finish_idempotency_key(g.user, key, 409, json.dumps(body), STREAMED_HEADERS)
            return response
        headers = {name: response.headers[name] for name in REPLAYED_HEADERS if name in response.headers}
        records.finish_idempotency_key(g.user, key, response.status_code, response.get_data(as_text=True), headers)
        return response

    return wrapper

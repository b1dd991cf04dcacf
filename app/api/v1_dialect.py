"""The OpenAI-compatible mount: the API blueprints once more under `/v1`, for the official SDKs.

Two things differ there: errors take OpenAI's shape (`error_body`), and a run that
has ended is answered 200 whatever its status (`ended_run`). Whether a request came
in under `/v1` is read from its path, because a 404 or 405 of the router has no
blueprint to tell.
"""

from __future__ import annotations

from flask import request

from app.errors import ApiError
from app.runs.polling import WaitResult
from app.services import Services

PREFIX = "/v1"

# OpenAI's `type` and `code` for the statuses where they are not the default
# (`invalid_request_error` below 500, `server_error` from 500, `code` null).
_TYPES = {429: "requests"}
_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded"}


def under_v1() -> bool:
    """Whether the current request came in under `/v1`."""
    return request.path == PREFIX or request.path.startswith(PREFIX + "/")


def error_body(error: ApiError) -> dict:
    """An error in OpenAI's shape, which the SDKs read into their exceptions."""
    default = "server_error" if error.status >= 500 else "invalid_request_error"
    return {
        "error": {
            "message": error.message,
            "type": _TYPES.get(error.status, default),
            "param": None,
            "code": _CODES.get(error.status),
        }
    }


def ended_run(services: Services, result: WaitResult) -> dict:
    """The run `/v1` answers with: as the wait ended it, or as recorded once the backend has
    settled it: past the deadline, after the cancel (`cancelling`, `cancelled`, or still active
    when it was not cancelled); after a call of a tool nobody declared, with its calls closed."""
    settled = result.timed_out or (result.run["status"] == "requires_action" and not result.awaits_client)
    if not settled:
        return result.run
    recorded = services.records.run(result.run["id"])
    return result.run if recorded is None else recorded.run

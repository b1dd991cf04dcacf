"""Runs: `POST /threads/<id>/runs` answers when the run has ended, or streams it; retrieve and cancel.

Under `/api/assistants/<type>` the blueprint is registered with the type as a
URL default, which `take_url_type` moves to `g.url_assistant_type`.
"""

from __future__ import annotations

import time

from flask import Blueprint, g, jsonify
from flask import request as flask_request

from app import tools
from app.api import authenticate_caller, services, v1_dialect
from app.api import validation as v
from app.api.idempotency import idempotent
from app.api.outcomes import TIMEOUT_OUTCOME, outcome_of
from app.api.sse import RunEvents, error_data
from app.api.streamed_answer import streamed_answer
from app.assistant_types import AssistantTypeError, resolve
from app.attachments import INCLUDE_RESULTS
from app.errors import NO_RETRY, ApiError
from app.ratelimit import run_limit
from app.runs import service
from app.runs.errors import CreateUnconfirmed, DeadlineBeforeStart
from app.runs.events import RunListener
from app.runs.service import LOCK_MARGIN_SECONDS, RunRequest, ToolOutputsRequest

RUN_FIELDS = {"assistant_type", "assistant_id", "temperature", "top_p", "stream", "metadata", "tools"}
SUBMIT_FIELDS = {"tool_outputs", "stream"}

bp = Blueprint("runs", __name__)


@bp.before_request
def note_arrival():
    """A run's deadline starts here: after the app's own hooks (request ID, metrics, and the
    rate limits, which may authenticate the caller), before this blueprint's checks and any
    upstream call."""
    g.arrived = time.monotonic()


bp.before_request(authenticate_caller)


@bp.url_value_preprocessor
def take_url_type(_endpoint, values):
    """The assistant type the URL fixes, if this registration has one."""
    g.url_assistant_type = (values or {}).pop("assistant_type", None)


def _unconfirmed() -> ApiError:
    return ApiError(
        504,
        "The upstream did not confirm the run in time; it may still be running. The thread stays busy "
        "until it would have ended; read its messages later.",
        headers=NO_RETRY,
    )


def _no_room() -> ApiError:
    return ApiError(
        503, "This server has no room for another waiting run; try again shortly.", headers={"Retry-After": "1"}
    )


@bp.post("/threads/<thread_id>/runs")
@run_limit
@idempotent
def create_run(thread_id):
    s = services()
    thread_id = v.checked_id(thread_id, "thread")
    body = v.json_body(RUN_FIELDS)
    stream = v.stream_flag(body)
    v.metadata(body.get("metadata"), s.settings.max_metadata_pairs)
    try:
        assistant = resolve(
            s.settings.assistant_types, g.url_assistant_type, body.get("assistant_type"), body.get("assistant_id")
        )
    except AssistantTypeError as exc:
        raise v.bad_request(str(exc)) from None
    try:
        client_tools = tools.client_tools(body.get("tools"), assistant.tools)
    except tools.ToolError as exc:
        raise v.bad_request(str(exc)) from None
    temperature = v.number_in_range(body, "temperature", 0, 2)
    top_p = v.number_in_range(body, "top_p", 0, 1)
    temperature = assistant.temperature if temperature is None else temperature
    top_p = assistant.top_p if top_p is None else top_p
    include = _include()
    request = RunRequest(g.user, thread_id, assistant, temperature, top_p, client_tools, g.arrived, include)
    return _answer(s, request, stream)


def _include() -> tuple[str, ...]:
    """The run's `include[]` query parameter: only the file_search results' text."""
    values = tuple(flask_request.args.getlist("include[]") + flask_request.args.getlist("include"))
    unknown = [value for value in values if value != INCLUDE_RESULTS]
    if unknown:
        raise v.bad_request(f"Unknown 'include[]' value '{unknown[0]}'; the only one is '{INCLUDE_RESULTS}'.")
    return values


@bp.post("/threads/<thread_id>/runs/<run_id>/submit_tool_outputs")
@run_limit
@idempotent
def submit_tool_outputs(thread_id, run_id):
    s = services()
    thread_id = v.checked_id(thread_id, "thread")
    run_id = v.checked_id(run_id, "run")
    body = v.json_body(SUBMIT_FIELDS)
    stream = v.stream_flag(body)
    outputs = v.tool_outputs(body.get("tool_outputs"))
    request = ToolOutputsRequest(g.user, thread_id, run_id, outputs, g.arrived)
    return _answer(s, request, stream)


def _answer(s, request: RunRequest | ToolOutputsRequest, stream: bool):
    """The answer to a run started or answered by `request`: its streamed answer, the run
    once it has ended, or the status table's error."""
    if stream:
        return _streamed(s, request)
    result = _within_capacity(s, request)
    if v1_dialect.under_v1():
        return jsonify(v1_dialect.ended_run(s, result))
    outcome, error = outcome_of(result, s.settings.run_timeout_seconds)
    if error is None:
        response = jsonify(result.run)
    else:
        response = jsonify({"error": error, "runStatus": result.run["status"], "run": result.run})
        response.headers.update(NO_RETRY)
    response.status_code = outcome.http_status
    return response


def _within_capacity(s, request: RunRequest | ToolOutputsRequest, listener: RunListener | None = None):
    """The run's service, in one of this worker's places for waiting runs; its creation
    failures as API errors."""
    if not s.capacity.try_take():
        raise _no_room()
    try:
        if isinstance(request, RunRequest):
            return service.start_and_wait(s, request, listener)
        return service.submit_tool_outputs(s, request, listener)
    except DeadlineBeforeStart:
        seconds = f"{s.settings.run_timeout_seconds:g}"
        raise ApiError(408, TIMEOUT_OUTCOME.error.format(seconds=seconds), headers=NO_RETRY) from None
    except CreateUnconfirmed:
        raise _unconfirmed() from None
    finally:
        s.capacity.give_back()


def _streamed(s, request: RunRequest | ToolOutputsRequest):
    """The run as Assistants stream events; every check above and in the service answers before them."""
    # A backstop: the service itself ends well before (docs/deploying.md, the timeout chain).
    ends_by = g.arrived + s.settings.run_timeout_seconds + LOCK_MARGIN_SECONDS
    return streamed_answer(_tell_run, (s, request), ends_by)


def _tell_run(s, request: RunRequest | ToolOutputsRequest, events: RunEvents) -> None:
    """The run's service with `events` as its listener (in the streamed answer's own thread)."""
    result = _within_capacity(s, request, events)
    if result.timed_out:  # sent only when the cancel did not end the run (see RunEvents)
        _, error = outcome_of(result, s.settings.run_timeout_seconds)
        events.error(error_data(error, "run_timeout"))


@bp.get("/threads/<thread_id>/runs/<run_id>")
def get_run(thread_id, run_id):
    run, poll_after_ms = service.retrieve(
        services(), g.user, v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run")
    )
    response = jsonify(run)
    if poll_after_ms is not None:
        response.headers["openai-poll-after-ms"] = str(poll_after_ms)
    return response


@bp.post("/threads/<thread_id>/runs/<run_id>/cancel")
def cancel_run(thread_id, run_id):
    return jsonify(service.cancel(services(), g.user, v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run")))

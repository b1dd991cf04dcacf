"""Runs: `POST /threads/<id>/runs` answers when the run has ended, or streams it; retrieve and cancel.

Under `/api/assistants/<type>` the blueprint is registered with the type as a
URL default, which `take_url_type` moves to `g.url_assistant_type`.
"""

from __future__ import annotations

import functools
import time

from flask import Blueprint, g, jsonify

from app import run_loop, runs, tools
from app.api import authenticate_caller, compat, services
from app.api import validation as v
from app.api.idempotency import idempotent
from app.api.outcomes import TIMEOUT_OUTCOME, outcome_of
from app.api.streams import event_stream
from app.assistant_types import AssistantTypeError, resolve
from app.errors import NO_RETRY, ApiError
from app.ratelimit import run_limit
from app.runs import LOCK_MARGIN_SECONDS
from app.stream_events import error_data

RUN_FIELDS = {"assistant_type", "assistant_id", "temperature", "top_p", "stream", "metadata", "tools"}
SUBMIT_FIELDS = {"tool_outputs", "stream"}

bp = Blueprint("runs", __name__)


@bp.before_request
def note_arrival():
    """A run's deadline starts when its request arrives, before any check or upstream call."""
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
    start = functools.partial(
        runs.start_and_wait,
        s,
        g.user,
        thread_id,
        assistant,
        temperature,
        top_p,
        client_tools=client_tools,
        arrived=g.arrived,
    )
    return _answer(s, start, stream)


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
    start = functools.partial(runs.submit_tool_outputs, s, g.user, thread_id, run_id, outputs, arrived=g.arrived)
    return _answer(s, start, stream)


def _answer(s, start, stream: bool):
    """The answer to a run waited for by `start(emit=...)`: its stream of events, the run,
    or the status table's error."""
    if stream:
        return _streamed(s, start)
    result = _within_capacity(s, start)
    if compat.under_v1():
        return jsonify(compat.ended_run(s, result))
    outcome, error = outcome_of(result, s.settings.run_timeout_seconds)
    if error is None:
        response = jsonify(result.run)
    else:
        response = jsonify({"error": error, "runStatus": result.run["status"], "run": result.run})
        response.headers.update(NO_RETRY)
    response.status_code = outcome.http_status
    return response


def _within_capacity(s, start, emit=None):
    """`start(emit=...)` (a run's service) in one of this worker's places for waiting runs,
    its creation failures as API errors."""
    if not s.capacity.try_take():
        raise _no_room()
    try:
        return start(emit=emit)
    except run_loop.DeadlineBeforeStart:
        seconds = f"{s.settings.run_timeout_seconds:g}"
        raise ApiError(408, TIMEOUT_OUTCOME.error.format(seconds=seconds), headers=NO_RETRY) from None
    except run_loop.CreateUnconfirmed:
        raise _unconfirmed() from None
    finally:
        s.capacity.give_back()


def _streamed(s, start):
    """The run as Assistants stream events; every check above and in `start` answers before them."""

    def work(emit):
        result = _within_capacity(s, start, emit)
        if result.timed_out:  # sent only when the cancel did not end the run (see RunEvents)
            _, error = outcome_of(result, s.settings.run_timeout_seconds)
            emit("error", error_data(error, "run_timeout"))

    # A backstop: the service itself ends well before (docs/deploying.md, the timeout chain).
    return event_stream(work, ends_by=g.arrived + s.settings.run_timeout_seconds + LOCK_MARGIN_SECONDS)


@bp.get("/threads/<thread_id>/runs/<run_id>")
def get_run(thread_id, run_id):
    run, poll_after_ms = runs.retrieve(
        services(), g.user, v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run")
    )
    response = jsonify(run)
    if poll_after_ms is not None:
        response.headers["openai-poll-after-ms"] = str(poll_after_ms)
    return response


@bp.post("/threads/<thread_id>/runs/<run_id>/cancel")
def cancel_run(thread_id, run_id):
    return jsonify(runs.cancel(services(), g.user, v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run")))

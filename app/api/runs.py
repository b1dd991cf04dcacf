"""Runs: `POST /threads/<id>/runs` answers when the run has ended, or streams it; `POST /threads/runs`
creates a thread and does the same; list, retrieve and cancel; the run's steps.

Under `/api/assistants/<type>` the blueprint is registered with the type as a
URL default, which `take_url_type` moves to `g.url_assistant_type`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from flask import Blueprint, g, jsonify
from flask import request as flask_request

from app import run_options, threads, usage
from app.api import authenticate_caller, services, v1_dialect
from app.api import validation as v
from app.api.idempotency import idempotent
from app.api.outcomes import TIMEOUT_OUTCOME, outcome_of
from app.api.sse import RunEvents, error_data
from app.api.streamed_answer import streamed_answer
from app.api.threads import checked_thread
from app.assistant_types import AssistantTypeError, resolve
from app.attachments import INCLUDE_RESULTS
from app.contract import UpstreamError
from app.errors import NO_RETRY, ApiError, from_upstream
from app.knowledge import type_vector_store_ids
from app.ratelimit import run_limit
from app.runs import service
from app.runs.errors import CreateFailed, CreateUnconfirmed, DeadlineBeforeStart
from app.runs.events import RunListener
from app.runs.service import LOCK_MARGIN_SECONDS, RunRequest, ToolOutputsRequest
from app.runs.steps import FILE_SEARCH_CONTENT

RUN_FIELDS = {"assistant_type", "assistant_id", "temperature", "top_p", "stream", "tools"} | run_options.FIELDS
SUBMIT_FIELDS = {"tool_outputs", "stream"}
# `POST .../threads/runs`: a run's fields and the new thread; the Assistants API took no additional_* there.
CREATE_AND_RUN_FIELDS = (RUN_FIELDS | {"thread"}) - {"additional_instructions", "additional_messages"}
THREAD_FIELDS = {"messages", "metadata"}
# The answer to a `POST .../threads/runs` whose run did not start names the thread it created.
THREAD_HEADER = "x-thread-id"
STEP_INCLUDES = (FILE_SEARCH_CONTENT,)

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


def _not_started() -> ApiError:
    # No x-should-retry: false: the upstream made no run, so a retry cannot make a second one.
    return ApiError(
        503,
        "The upstream failed to start the run and made none; the thread is free: try again.",
        headers={"Retry-After": "1"},
    )


def _no_room() -> ApiError:
    return ApiError(
        503, "This server has no room for another waiting run; try again shortly.", headers={"Retry-After": "1"}
    )


@dataclass(frozen=True)
class NewThread:
    """The thread a `POST .../threads/runs` creates before its run, checked."""

    messages: list[dict]
    metadata: dict | None


@bp.post("/threads/<thread_id>/runs")
@run_limit
@idempotent
def create_run(thread_id):
    s = services()
    thread_id = v.checked_id(thread_id, "thread")
    body = v.json_body(RUN_FIELDS)
    stream = v.stream_flag(body)
    return _answer(s, _run_request(s, body, thread_id), stream)


@bp.post("/threads/runs")
@run_limit
@idempotent
def create_thread_and_run():
    """Create a thread with its messages and run it: every check first, then the thread, then the
    run as `POST .../threads/<id>/runs` starts it."""
    s = services()
    body = v.json_body(CREATE_AND_RUN_FIELDS)
    stream = v.stream_flag(body)
    thread = {} if body.get("thread") is None else body["thread"]
    if not isinstance(thread, dict) or set(thread) - THREAD_FIELDS:
        raise v.bad_request(f"'thread' must be an object with: {', '.join(sorted(THREAD_FIELDS))}.")
    new_thread = NewThread(*checked_thread(thread, s.settings))
    request = _run_request(s, body, None)
    usage.check_budget(s, request.owner, request.assistant.name)  # before the thread is created upstream
    return _answer(s, request, stream, new_thread)


def _hosted_tools(s, assistant) -> set[str]:
    """The hosted tools a run of `assistant` may be told to choose: file_search where the type has
    knowledge (the assistants engine's upstream assistant decides for itself)."""
    if s.engine.name == "assistants" or type_vector_store_ids(s, assistant):
        return {"file_search"}
    return set()


def _run_request(s, body: dict, thread_id: str | None) -> RunRequest:
    """The run `body` asks for on `thread_id`, every field checked."""
    try:
        assistant = resolve(
            s.settings.assistant_types, g.url_assistant_type, body.get("assistant_type"), body.get("assistant_id")
        )
    except AssistantTypeError as exc:
        raise v.bad_request(str(exc)) from None
    client_tools = run_options.run_tools(body.get("tools"), assistant)
    options = run_options.parse(
        body,
        assistant,
        engine=s.engine.name,
        functions={tool.name for tool in assistant.tools + client_tools},
        hosted=_hosted_tools(s, assistant) if "tool_choice" in body else frozenset(),  # only tool_choice names them
        max_chars=s.settings.max_message_chars,
        max_pairs=s.settings.max_metadata_pairs,
    )
    temperature = v.number_in_range(body, "temperature", 0, 2)
    top_p = v.number_in_range(body, "top_p", 0, 1)
    temperature = assistant.temperature if temperature is None else temperature
    top_p = assistant.top_p if top_p is None else top_p
    include = _include()
    return RunRequest(g.user, thread_id, assistant, temperature, top_p, client_tools, g.arrived, options, include)


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


def _answer(s, request: RunRequest | ToolOutputsRequest, stream: bool, new_thread: NewThread | None = None):
    """The answer to a run started or answered by `request` (on `new_thread`, created first,
    when given): its streamed answer, the run once it has ended, or the status table's error."""
    if stream:
        return _streamed(s, request, new_thread)
    result = _within_capacity(s, request, None, new_thread)
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


def _within_capacity(
    s,
    request: RunRequest | ToolOutputsRequest,
    listener: RunEvents | None = None,
    new_thread: NewThread | None = None,
):
    """The run's service, in one of this worker's places for waiting runs, after creating
    `new_thread` if given; its creation failures as API errors (which then name the thread)."""
    if not s.capacity.try_take():
        raise _no_room()
    try:
        if new_thread is None:
            return _service(s, request, listener)
        created = threads.create(s, request.owner, new_thread.messages, new_thread.metadata)
        if listener is not None:
            listener.thread_created(created)
        try:
            return _service(s, replace(request, thread_id=created["id"]), listener)
        except (ApiError, UpstreamError) as exc:
            error = exc if isinstance(exc, ApiError) else from_upstream(exc)
            error.headers = {**error.headers, THREAD_HEADER: created["id"]}
            error.extra = {**error.extra, "thread_id": created["id"]}
            raise error from None
    finally:
        s.capacity.give_back()


def _service(s, request: RunRequest | ToolOutputsRequest, listener: RunListener | None):
    """The run's service; its creation failures as API errors."""
    try:
        if isinstance(request, RunRequest):
            return service.start_and_wait(s, request, listener)
        return service.submit_tool_outputs(s, request, listener)
    except DeadlineBeforeStart:
        seconds = f"{s.settings.run_timeout_seconds:g}"
        raise ApiError(408, TIMEOUT_OUTCOME.error.format(seconds=seconds), headers=NO_RETRY) from None
    except CreateUnconfirmed:
        raise _unconfirmed() from None
    except CreateFailed:
        raise _not_started() from None


def _streamed(s, request: RunRequest | ToolOutputsRequest, new_thread: NewThread | None = None):
    """The run as Assistants stream events (after `thread.created` when it creates its thread);
    every check above and in the service answers before them."""
    # A backstop: the service itself ends well before (docs/deploying.md, the timeout chain).
    ends_by = g.arrived + s.settings.run_timeout_seconds + LOCK_MARGIN_SECONDS
    return streamed_answer(_tell_run, (s, request, new_thread), ends_by)


def _tell_run(s, request: RunRequest | ToolOutputsRequest, new_thread: NewThread | None, events: RunEvents) -> None:
    """The run's service with `events` as its listener (in the streamed answer's own thread)."""
    result = _within_capacity(s, request, events, new_thread)
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


@bp.get("/threads/<thread_id>/runs")
def list_runs(thread_id):
    return jsonify(service.list_runs(services(), g.user, v.checked_id(thread_id, "thread"), v.list_page()))


@bp.get("/threads/<thread_id>/runs/<run_id>/steps")
def list_run_steps(thread_id, run_id):
    page = v.list_page(extra=("include[]",))
    include = v.step_include(STEP_INCLUDES)
    thread_id, run_id = v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run")
    return jsonify(service.list_steps(services(), g.user, thread_id, run_id, page, include))


@bp.get("/threads/<thread_id>/runs/<run_id>/steps/<step_id>")
def get_run_step(thread_id, run_id, step_id):
    include = v.step_include(STEP_INCLUDES)
    ids = (v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run"), v.checked_id(step_id, "step"))
    return jsonify(service.retrieve_step(services(), g.user, *ids, include))

"""Runs as the API offers them: start one and wait for its end, answer the tool calls it asked
the client for, retrieve one, cancel one (no HTTP).

The service checks the thread, takes its lock and hands the run to a `RunDriver`
(app/runs/driver.py), which carries it upstream to its end.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from dataclasses import dataclass, field

from app import metrics, usage
from app.assistant_types import AssistantType
from app.attachments import RunStores, run_file_search, run_stores
from app.contract import ACTIVE_STATUSES, MessagePage, Poll, UpstreamNotFound
from app.errors import NO_RETRY, ApiError, bad_request, not_found, thread_busy, upstream_lost
from app.run_options import RunOptions, carried
from app.runs.driver import RunDriver, release_requires_action
from app.runs.errors import CreateUnconfirmed
from app.runs.events import RunListener
from app.runs.plan import RunPlan, added_usage, ended_as, started_at, tool_calls
from app.runs.polling import WaitResult
from app.runs.recovery import ADOPTION_GRACE_SECONDS, LOCK_MARGIN_SECONDS, STARTING_PREFIX, recover, this_process
from app.runs.steps import end_open_steps, with_content
from app.services import Services
from app.store.records import RecordedRun
from app.threads import require_thread
from app.tools import Tool

log = logging.getLogger("app.runs")


@dataclass(frozen=True)
class RunRequest:
    """A request to start a run, checked: who asks, on which thread, with which assistant
    and sampling, the function tools its client declared (the type's and the body's), when it
    arrived (time.monotonic(), where the run's deadline starts; None: now), and its own settings."""

    owner: str
    thread_id: str
    assistant: AssistantType
    temperature: float | None
    top_p: float | None
    client_tools: tuple[Tool, ...] = ()
    arrived: float | None = None
    options: RunOptions = field(default_factory=RunOptions)
    include: tuple[str, ...] = ()  # what the run's file_search answers ("include[]")


@dataclass(frozen=True)
class ToolOutputsRequest:
    """A client's answer to the calls a run asked it for, checked for its shape only."""

    owner: str
    thread_id: str
    run_id: str
    tool_outputs: list[dict]
    arrived: float | None = None


def _deadline(services: Services, arrived: float | None) -> float:
    return (time.monotonic() if arrived is None else arrived) + services.settings.run_timeout_seconds


def start_and_wait(
    services: Services, request: RunRequest, listener: RunListener | None = None, sleep=time.sleep
) -> WaitResult:
    """Start a run and wait for its end through its rounds of server tools.

    The deadline runs from `request.arrived`. Raises DeadlineBeforeStart or
    CreateUnconfirmed when no run could be started or confirmed. A `listener`
    (a streamed answer) hears of the run's progress.
    """
    thread_id = request.thread_id
    deadline = _deadline(services, request.arrived)
    if services.settings.budgets.any:  # the thread's 404 comes before a budget's 429
        require_thread(services, request.owner, thread_id)
        usage.check_budget(services, request.owner, request.assistant.name)  # before anything is created upstream
    holder = f"{STARTING_PREFIX}{uuid.uuid4().hex}"
    waiting, stores = _lock(services, request, holder)
    if waiting is None:
        require_thread(services, request.owner, thread_id)  # no lock to take on a thread deleted meanwhile: 404
        raise thread_busy(thread_id, services.records.active_run(thread_id))
    plan = RunPlan(
        thread_id,
        request.owner,
        request.assistant,
        request.temperature,
        request.top_p,
        request.client_tools,
        options=request.options,
    )
    with _holding_thread(services, plan, holder):
        for recorded in waiting:  # expired, if their wait for the client's outputs has run out
            _expire_if_due(services, recorded)
        _add_additional_messages(services, plan)
        plan.file_search = run_file_search(
            services, request.owner, thread_id, request.assistant, stores, request.include, deadline, sleep
        )
        try:
            return RunDriver(services, plan, deadline, sleep, listener).start(holder)
        except UpstreamNotFound:
            raise upstream_lost(thread_id, plan.run_id) from None


def _lock(services: Services, request: RunRequest, holder: str) -> tuple[list[RecordedRun] | None, RunStores | None]:
    """Take the lock of the owner's thread for this process and read its runs waiting for tool
    outputs and the vector stores the run may search, in one transaction (None: busy; 404: not
    theirs). A lock whose holder died is recovered first (app/runs/recovery.py), and taken when
    its run has settled within a short grace."""
    owner, thread_id = request.owner, request.thread_id
    seconds = services.settings.run_timeout_seconds + LOCK_MARGIN_SECONDS

    def lock_and_read():
        with services.records.together():
            waiting = services.records.lock_owned_thread(thread_id, owner, holder, seconds, this_process())
            return waiting, None if waiting is None else run_stores(services, thread_id, request.assistant)

    waiting, stores = lock_and_read()
    if waiting is not None:
        return waiting, stores
    require_thread(services, owner, thread_id)  # not theirs (or deleted meanwhile): 404, nothing recovered
    adoption = recover(services, thread_id)
    if adoption is None:
        return None, None
    adoption.join(ADOPTION_GRACE_SECONDS)
    return lock_and_read()


def submit_tool_outputs(
    services: Services, request: ToolOutputsRequest, listener: RunListener | None = None, sleep=time.sleep
) -> WaitResult:
    """Answer the calls a run asked the client for, and wait for the run's end as `start_and_wait` does."""
    settings = services.settings
    thread_id, run_id = request.thread_id, request.run_id
    deadline = _deadline(services, request.arrived)
    require_thread(services, request.owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is None:
        raise not_found("run", run_id)
    recorded = _expire_if_due(services, recorded)
    if recorded.pending is None:
        raise ApiError(400, f"Runs in status '{recorded.run['status']}' do not accept tool outputs.")
    plan = RunPlan.resumed(recorded.pending, settings.assistant_types, thread_id)
    usage.check_budget(services, request.owner, plan.assistant.name)  # before the outputs go upstream
    run, server_outputs = recorded.pending["run"], recorded.pending["server_outputs"]
    answers = _checked_outputs(request.tool_outputs, [c["id"] for c in tool_calls(recorded.run)])
    lock_seconds = settings.run_timeout_seconds + LOCK_MARGIN_SECONDS
    if not services.records.take_pending(run_id, recorded.pending, lock_seconds, this_process()):
        raise ApiError(409, f"Run {run_id} is already being answered.", headers=NO_RETRY)
    outputs = [(c["id"], server_outputs.get(c["id"], answers.get(c["id"]))) for c in tool_calls(run)]
    plan.usage = added_usage(plan.usage, run.get("usage"))
    log.info("run %s: the client answered %d call(s)", run_id, len(answers))
    with _holding_thread(services, plan, run_id):
        try:
            return RunDriver(services, plan, deadline, sleep, listener).resume(run, outputs)
        except UpstreamNotFound:
            raise upstream_lost(thread_id, run_id) from None


def _remember(services: Services, poll: Poll, owner: str, assistant_type: str) -> None:
    run = poll.run
    final = run["status"] not in ACTIVE_STATUSES
    services.records.save_run(run, owner, assistant_type, final)
    if poll.messages:
        services.records.add_messages(run["thread_id"], list(poll.messages), run_id=run["id"])


def _checked_outputs(tool_outputs: list[dict], open_ids: list[str]) -> dict[str, str]:
    """{call ID: output} when `tool_outputs` answers every open call exactly once; 400 otherwise."""
    answers: dict[str, str] = {}
    for item in tool_outputs:
        call_id = item["tool_call_id"]
        if call_id not in open_ids:
            raise bad_request(
                f"Tool call '{call_id}' is not one this run waits for; it waits for: {', '.join(open_ids)}."
            )
        if call_id in answers:
            raise bad_request(f"Tool call '{call_id}' is answered more than once.")
        answers[call_id] = item["output"]
    missing = [call_id for call_id in open_ids if call_id not in answers]
    if missing:
        raise bad_request(f"Every tool call needs its output; missing: {', '.join(missing)}.")
    return answers


@contextlib.contextmanager
def _holding_thread(services: Services, plan: RunPlan, holder: str):
    """While this request holds the thread's lock (taken as `holder`, then held by the run):
    free the lock if the run breaks off, except when a run may exist upstream unconfirmed."""
    metrics.run_started()
    try:
        yield
    except CreateUnconfirmed as exc:
        # A run may exist upstream: the thread's lock and the Idempotency-Key stay
        # taken until they expire, so that nothing starts a second run beside it.
        log.warning("run on %s: start unconfirmed (%s); the thread stays locked", plan.thread_id, exc)
        raise
    except BaseException:
        for taken_as in {holder, plan.run_id} - {None}:
            services.records.unlock_thread(plan.thread_id, taken_as)
        raise
    finally:
        metrics.run_ended()


def _expire_if_due(services: Services, recorded: RecordedRun) -> RecordedRun:
    """A run whose wait for the client's outputs has run out is expired: its calls closed, the record ended."""
    pending = recorded.pending
    if pending is None or time.time() < pending["expires_at"]:
        return recorded
    if not services.records.take_pending(recorded.run["id"], pending, 0):
        return services.records.run(recorded.run["id"]) or recorded
    release_requires_action(services, recorded.run["thread_id"], pending["run"])
    ended = ended_as(recorded.run, "expired")
    services.records.run_ended(ended, [], pending["owner"], pending["assistant_type"])
    end_open_steps(services.records, ended)
    log.info("run %s expired waiting for the client's tool outputs", ended["id"])
    return RecordedRun(ended, True, assistant_type=recorded.assistant_type)


def _expire_waiting_runs(services: Services, thread_id: str) -> None:
    for recorded in services.records.waiting_runs(thread_id):
        _expire_if_due(services, recorded)


def _owned_run_record(services: Services, thread_id: str, run_id: str) -> RecordedRun | None:
    recorded = services.records.run(run_id)
    if recorded is not None and recorded.run["thread_id"] != thread_id:
        raise not_found("run", run_id)
    return recorded


def _add_additional_messages(services: Services, plan: RunPlan) -> None:
    """A run's `additional_messages`, added to its thread before the run where the engine's run
    creation does not add them itself."""
    if services.engine.additional_messages_in_run:
        return
    for message in plan.options.additional_messages:
        added = services.engine.add_message(
            plan.thread_id, message["role"], message["content"], message.get("metadata")
        )
        services.records.add_messages(plan.thread_id, [added])


def _as_recorded(upstream: dict, recorded: RecordedRun) -> dict:
    """The current upstream run under the ID, creation and start times its client knows, with the
    settings its record shows."""
    run = carried(recorded.run, dict(upstream, id=recorded.run["id"], created_at=recorded.run["created_at"]))
    run["started_at"] = started_at(recorded.run.get("started_at"), upstream)
    return run


def _recovered(services: Services, recorded: RecordedRun) -> RecordedRun:
    """The run's record after its adoption, when the process that waited for it has died."""
    thread_id, run_id = recorded.run["thread_id"], recorded.run["id"]
    lock = services.records.thread_lock(thread_id)
    adoption = recover(services, thread_id, lock) if lock is not None and lock.run == run_id else None
    if adoption is None:
        return recorded
    adoption.join(ADOPTION_GRACE_SECONDS)
    return services.records.run(run_id) or recorded


def retrieve(services: Services, owner: str, thread_id: str, run_id: str) -> tuple[dict, int | None]:
    """The run now, without waiting (from the record once it has ended or while it waits for
    the client's tool outputs), and when to look again if it is active."""
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is not None:
        recorded = _expire_if_due(services, recorded)
        if not recorded.final and recorded.pending is None:
            recorded = _recovered(services, recorded)
        if recorded.final or recorded.pending is not None:
            return recorded.run, None
    upstream_id = recorded.upstream_id or run_id if recorded else run_id
    try:
        poll = services.engine.get_run(thread_id, upstream_id)
    except UpstreamNotFound:
        if recorded is None:
            raise not_found("run", run_id) from None
        return recorded.run, None  # the upstream has forgotten it; the record has not
    run = poll.run
    if recorded is not None:
        usage.record_run(services, owner, None, run, run_id)  # a run whose wait broke off, once ended
        run = _as_recorded(run, recorded)
        if run["status"] == "requires_action":  # the server is running its tools
            run.update(status="in_progress", required_action=None)
        messages = tuple(dict(m, run_id=run_id) for m in poll.messages)
        _remember(services, Poll(run, poll.poll_after_ms, messages), owner, recorded.assistant_type)
    poll_after = None
    if run["status"] in ACTIVE_STATUSES:
        poll_after = poll.poll_after_ms or services.settings.poll_max_ms
    return run, poll_after


def cancel(services: Services, owner: str, thread_id: str, run_id: str) -> dict:
    """Ask the upstream to cancel the run; a run waiting for the client's tool outputs has its calls closed."""
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is not None:
        recorded = _expire_if_due(services, recorded)
        if recorded.pending is not None and services.records.take_pending(run_id, recorded.pending, 0):
            release_requires_action(services, thread_id, recorded.pending["run"])
            cancelled = ended_as(recorded.run, "cancelled")
            services.records.run_ended(cancelled, [], owner, recorded.pending["assistant_type"])
            end_open_steps(services.records, cancelled)
            return cancelled
        if recorded.final:
            status = recorded.run["status"]
            raise ApiError(400, f"Cannot cancel run with status '{status}'.")
    upstream_id = recorded.upstream_id or run_id if recorded else run_id
    try:
        run = services.engine.cancel_run(thread_id, upstream_id)
    except UpstreamNotFound:
        raise not_found("run", run_id) from None  # the same answer as for another user's run
    if recorded is not None:
        run = _as_recorded(run, recorded)
        services.records.save_run(run, owner, recorded.assistant_type, final=run["status"] not in ACTIVE_STATUSES)
    return run


def list_runs(services: Services, owner: str, thread_id: str, page: MessagePage) -> dict:
    """The thread's runs as the backend recorded them (a run waiting past its time for the client's
    tool outputs is expired first)."""
    require_thread(services, owner, thread_id)
    _expire_waiting_runs(services, thread_id)
    return services.records.list_runs(thread_id, page)


def _recorded_run_of(services: Services, owner: str, thread_id: str, run_id: str) -> RecordedRun:
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is None:
        raise not_found("run", run_id)
    return recorded


def list_steps(
    services: Services, owner: str, thread_id: str, run_id: str, page: MessagePage, include: tuple[str, ...] = ()
) -> dict:
    """The run's steps (app/runs/steps.py), a page of them."""
    _recorded_run_of(services, owner, thread_id, run_id)
    listed = services.records.list_steps(run_id, page)
    listed["data"] = [with_content(step, include) for step in listed["data"]]
    return listed


def retrieve_step(
    services: Services, owner: str, thread_id: str, run_id: str, step_id: str, include: tuple[str, ...] = ()
) -> dict:
    """One step of the run."""
    _recorded_run_of(services, owner, thread_id, run_id)
    step = services.records.step(run_id, step_id)
    if step is None:
        raise not_found("run step", step_id)
    return with_content(step, include)

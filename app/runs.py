"""Runs as the API offers them: start one and wait for its end, answer the tool calls it asked
the client for, retrieve one, cancel one (no HTTP). `run_loop` carries a run from its start
to its end."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

from app import metrics, run_loop, usage
from app.assistant_types import AssistantType
from app.contract import ACTIVE_STATUSES, Poll, StartedRun, UpstreamNotFound
from app.environment import CANCEL_GRACE_SECONDS
from app.errors import NO_RETRY, ApiError, bad_request, not_found, thread_busy
from app.rounds import RunPlan, added_usage, ended_as, present, tool_calls
from app.run_loop import CreateUnconfirmed, Emit
from app.services import Services
from app.store.records import RecordedRun
from app.threads import require_thread
from app.tools import Tool
from app.waiting import WaitResult

log = logging.getLogger("app.runs")

# The lock outlives the wait by this much, for the cancel and the bookkeeping.
LOCK_MARGIN_SECONDS = CANCEL_GRACE_SECONDS + 10.0


def _remember(services: Services, poll: Poll, owner: str, assistant_type: str) -> None:
    run = poll.run
    final = run["status"] not in ACTIVE_STATUSES
    services.records.save_run(run, owner, assistant_type, final)
    if poll.messages:
        services.records.add_messages(run["thread_id"], list(poll.messages), run_id=run["id"])


def start_and_wait(
    services: Services,
    owner: str,
    thread_id: str,
    assistant: AssistantType,
    temperature,
    top_p,
    client_tools: tuple[Tool, ...] = (),
    arrived: float | None = None,
    sleep=time.sleep,
    emit: Emit | None = None,
) -> WaitResult:
    """Start a run and wait for its end through its rounds of server tools.

    The deadline runs from `arrived` (time.monotonic() when the request came in). Raises
    DeadlineBeforeStart or CreateUnconfirmed when no run could be started or confirmed.
    With `emit`, the run's progress is told as Assistants stream events (`emit(name, data)`).
    """
    settings = services.settings
    deadline = (time.monotonic() if arrived is None else arrived) + settings.run_timeout_seconds
    require_thread(services, owner, thread_id)
    usage.check_budget(services, owner, assistant.name)  # usage: refused before anything is created upstream
    holder = f"starting-{uuid.uuid4().hex}"
    if not services.records.lock_thread(thread_id, holder, settings.run_timeout_seconds + LOCK_MARGIN_SECONDS):
        require_thread(services, owner, thread_id)  # no lock to take on a thread deleted meanwhile: 404
        raise thread_busy(thread_id, services.records.active_run(thread_id))
    plan = RunPlan(thread_id, owner, assistant, temperature, top_p, client_tools, emit=emit)

    def create(timeout: float) -> StartedRun:
        return services.engine.start_run(
            thread_id,
            assistant,
            temperature,
            top_p,
            timeout=timeout,
            stream=run_loop.streamed(services, plan),
            tools=plan.tools,
        )

    def first_round() -> WaitResult:
        _expire_waiting_runs(services, thread_id)
        started = run_loop.attempt(services, create, deadline, sleep, f"create run on {thread_id}")
        plan.run_id, plan.created_at = started.run["id"], started.run["created_at"]
        run = present(plan, started.run)
        services.records.run_started(thread_id, holder, run, owner, assistant.name)
        if emit is not None:
            emit("thread.run.created", run)
        log.info(
            "run %s created on %s (status %s, type %s)", plan.run_id, thread_id, started.run["status"], assistant.name
        )
        return run_loop.drive(services, plan, started, deadline, sleep)

    return _holding_thread(services, plan, holder, first_round)


def submit_tool_outputs(
    services: Services,
    owner: str,
    thread_id: str,
    run_id: str,
    tool_outputs: list[dict],
    arrived: float | None = None,
    sleep=time.sleep,
    emit: Emit | None = None,
) -> WaitResult:
    """Answer the calls a run asked the client for, and wait for the run's end as `start_and_wait` does."""
    settings = services.settings
    deadline = (time.monotonic() if arrived is None else arrived) + settings.run_timeout_seconds
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is None:
        raise not_found("run", run_id)
    recorded = _expire_if_due(services, recorded)
    if recorded.pending is None:
        raise ApiError(400, f"Runs in status '{recorded.run['status']}' do not accept tool outputs.")
    plan = RunPlan.resumed(recorded.pending, settings.assistant_types, thread_id, emit)
    usage.check_budget(services, owner, plan.assistant.name)  # usage: refused before the outputs go upstream
    run, server_outputs = recorded.pending["run"], recorded.pending["server_outputs"]
    answers = _checked_outputs(tool_outputs, [c["id"] for c in tool_calls(recorded.run)])
    if not services.records.take_pending(run_id, recorded.pending, settings.run_timeout_seconds + LOCK_MARGIN_SECONDS):
        raise ApiError(409, f"Run {run_id} is already being answered.", headers=NO_RETRY)
    outputs = [(c["id"], server_outputs.get(c["id"], answers.get(c["id"]))) for c in tool_calls(run)]
    plan.usage = added_usage(plan.usage, run.get("usage"))
    log.info("run %s: the client answered %d call(s)", run_id, len(answers))

    def next_round() -> WaitResult:
        started = run_loop.go_on(services, plan, run, outputs, deadline, sleep)
        return started if isinstance(started, WaitResult) else run_loop.drive(services, plan, started, deadline, sleep)

    return _holding_thread(services, plan, run_id, next_round)


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


def _holding_thread(services: Services, plan: RunPlan, holder: str, body: Callable[[], WaitResult]) -> WaitResult:
    """Run `body` while this request holds the thread's lock (taken as `holder`, then held by the
    run); free the lock if it breaks off, except when a run may exist upstream unconfirmed."""
    metrics.run_started()
    try:
        return body()
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
    run_loop.release_requires_action(services, recorded.run["thread_id"], pending["run"])
    ended = ended_as(recorded.run, "expired")
    services.records.run_ended(ended, [], pending["owner"], pending["assistant_type"])
    log.info("run %s expired waiting for the client's tool outputs", ended["id"])
    return RecordedRun(ended, True)


def _expire_waiting_runs(services: Services, thread_id: str) -> None:
    for recorded in services.records.waiting_runs(thread_id):
        _expire_if_due(services, recorded)


def _owned_run_record(services: Services, thread_id: str, run_id: str) -> RecordedRun | None:
    recorded = services.records.run(run_id)
    if recorded is not None and recorded.run["thread_id"] != thread_id:
        raise not_found("run", run_id)
    return recorded


def _as_recorded(upstream: dict, recorded: RecordedRun) -> dict:
    """The current upstream run under the ID and creation time its client knows."""
    return dict(upstream, id=recorded.run["id"], created_at=recorded.run["created_at"])


def retrieve(services: Services, owner: str, thread_id: str, run_id: str) -> tuple[dict, int | None]:
    """The run now, without waiting (from the record once it has ended or while it waits for
    the client's tool outputs), and when to look again if it is active."""
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is not None:
        recorded = _expire_if_due(services, recorded)
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
        usage.record_run(services, owner, None, run, run_id)  # usage: a run whose wait broke off, once ended
        run = _as_recorded(run, recorded)
        if run["status"] == "requires_action":  # the server is running its tools
            run.update(status="in_progress", required_action=None)
        messages = tuple(dict(m, run_id=run_id) for m in poll.messages)
        _remember(services, Poll(run, poll.poll_after_ms, messages), owner, "unknown")
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
            run_loop.release_requires_action(services, thread_id, recorded.pending["run"])
            cancelled = ended_as(recorded.run, "cancelled")
            services.records.run_ended(cancelled, [], owner, recorded.pending["assistant_type"])
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
        services.records.save_run(run, owner, "unknown", final=run["status"] not in ACTIVE_STATUSES)
    return run

"""Runs: start one and wait for it on the server through its rounds of tool calls, take the client's
tool outputs, retrieve one, cancel one (no HTTP)."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import replace

from app import metrics
from app.assistant_types import AssistantType
from app.contract import (
    ACTIVE_STATUSES,
    MessagePage,
    Poll,
    StartedRun,
    UpstreamError,
    UpstreamNotFound,
    UpstreamTransient,
    maybe_sent,
)
from app.engines.client import QUICK_CALL_SECONDS
from app.environment import CANCEL_GRACE_SECONDS
from app.errors import NO_RETRY, ApiError, bad_request, not_found, thread_busy
from app.rounds import RunPlan, added_usage, ended_as, present, too_many_rounds, tool_calls
from app.services import Services
from app.store.records import RecordedRun
from app.threads import require_thread
from app.tools import Tool, call_all
from app.waiting import MIN_DELAY_SECONDS, PollSchedule, WaitResult, wait_for_run

log = logging.getLogger("app.runs")

NOT_SUBMITTED = {"code": "server_error", "message": "The upstream refused the tool outputs; see the server log."}

# Tells a streamed answer what happens: emit(Assistants stream event name, its data).
Emit = Callable[[str, object], None]

# The lock outlives the wait by this much, for the cancel and the bookkeeping.
LOCK_MARGIN_SECONDS = CANCEL_GRACE_SECONDS + 10.0


def _remember(services: Services, poll: Poll, owner: str, assistant_type: str) -> None:
    run = poll.run
    final = run["status"] not in ACTIVE_STATUSES
    services.records.save_run(run, owner, assistant_type, final)
    if poll.messages:
        services.records.add_messages(run["thread_id"], list(poll.messages), run_id=run["id"])


def _call_seconds(deadline: float) -> float:
    """The timeout of one look or cancel: short, and never past `deadline`."""
    return max(0.05, min(QUICK_CALL_SECONDS, deadline - time.monotonic()))


def _cancel_and_settle(services: Services, thread_id: str, run_id: str) -> Poll | None:
    """Cancel the run upstream and wait briefly until the cancel has taken.

    The cancel and the looks after it share CANCEL_GRACE_SECONDS, part of the timeout chain.
    """
    grace_ends = time.monotonic() + CANCEL_GRACE_SECONDS
    try:
        cancelled = services.engine.cancel_run(thread_id, run_id, _call_seconds(grace_ends))
    except UpstreamError as exc:
        log.warning("run %s: cancel failed: %s", run_id, exc)
        return None
    settled = wait_for_run(
        lambda: services.engine.get_run(thread_id, run_id, _call_seconds(grace_ends)),
        cancelled,
        timeout=max(0.1, grace_ends - time.monotonic()),
        schedule=PollSchedule(first_ms=50, max_ms=500),
    )
    log.info("run %s: cancelled upstream, now %s", run_id, settled.run["status"])
    return Poll(settled.run)


def _release_requires_action(services: Services, thread_id: str, run: dict) -> Poll | None:
    """Leave the thread usable after a run that stopped for function calls."""
    try:
        if services.engine.close_open_calls(thread_id, run, CANCEL_GRACE_SECONDS):
            return None
    except UpstreamError as exc:
        log.warning("run %s: could not close its function calls: %s", run["id"], exc)
        return None
    return _cancel_and_settle(services, thread_id, run["id"])


class DeadlineBeforeStart(Exception):
    """The deadline passed before the upstream accepted the run."""


class CreateUnconfirmed(Exception):
    """The create may have reached the upstream, but no run came back."""


def _attempt(services: Services, start: Callable[[float], StartedRun], deadline: float, sleep, what: str) -> StartedRun:
    """Start an upstream run inside the deadline: each attempt bounded by the time left, and
    retried only when the upstream surely did not receive it (connect error, 429)."""
    backoff = 0.25
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineBeforeStart()
        try:
            return start(min(left, services.settings.upstream_timeout_seconds))
        except UpstreamError as exc:
            if maybe_sent(exc):
                raise CreateUnconfirmed(str(exc)) from None
            if not isinstance(exc, UpstreamTransient):
                raise
            delay = max(MIN_DELAY_SECONDS, exc.retry_after if exc.retry_after is not None else backoff)
            if time.monotonic() + delay >= deadline:
                raise
            log.info("%s: %s (not sent); trying again in %.2fs", what, exc, delay)
            sleep(delay)
            backoff = min(backoff * 2, 4.0)


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
            stream=_streamed(services, plan),
            tools=plan.tools,
        )

    def first_round() -> WaitResult:
        _expire_waiting_runs(services, thread_id)
        started = _attempt(services, create, deadline, sleep, f"create run on {thread_id}")
        plan.run_id, plan.created_at = started.run["id"], started.run["created_at"]
        services.records.run_started(thread_id, holder, present(plan, started.run), owner, assistant.name)
        if emit is not None:
            emit("thread.run.created", present(plan, started.run))
        log.info(
            "run %s created on %s (status %s, type %s)", plan.run_id, thread_id, started.run["status"], assistant.name
        )
        return _drive(services, plan, started, deadline, sleep)

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
    run, server_outputs = recorded.pending["run"], recorded.pending["server_outputs"]
    answers = _checked_outputs(tool_outputs, [c["id"] for c in tool_calls(recorded.run)])
    if not services.records.take_pending(run_id, recorded.pending, settings.run_timeout_seconds + LOCK_MARGIN_SECONDS):
        raise ApiError(409, f"Run {run_id} is already being answered.", headers=NO_RETRY)
    outputs = [(c["id"], server_outputs.get(c["id"], answers.get(c["id"]))) for c in tool_calls(run)]
    plan.usage = added_usage(plan.usage, run.get("usage"))
    log.info("run %s: the client answered %d call(s)", run_id, len(answers))

    def next_round() -> WaitResult:
        started = _go_on(services, plan, run, outputs, deadline, sleep)
        return started if isinstance(started, WaitResult) else _drive(services, plan, started, deadline, sleep)

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


def _streamed(services: Services, plan: RunPlan) -> bool:
    """Whether to read the upstream's own event stream: always for a streamed answer."""
    return plan.emit is not None or services.settings.wait_strategy == "stream"


def _as_client_run(plan: RunPlan, emit: Emit) -> Emit:
    """`emit` with each upstream run shown as the client's one run."""

    def told(name: str, data) -> None:
        emit(name, present(plan, data) if name.startswith("thread.run.") else data)

    return told


def _wait(services: Services, plan: RunPlan, started: StartedRun, deadline: float) -> WaitResult:
    upstream_id = started.run["id"]
    if upstream_id != plan.run_id:
        services.records.run_progress(plan.run_id, upstream_id)
    watch, emit = started.watch, None
    if plan.emit is not None:
        emit = _as_client_run(plan, plan.emit)
        watch = watch and functools.partial(watch, emit=emit)
    try:
        return wait_for_run(
            lambda: services.engine.get_run(plan.thread_id, upstream_id, _call_seconds(deadline)),
            started.run,
            timeout=max(0.0, deadline - time.monotonic()),
            schedule=services.schedule,
            watch=watch,
            emit=emit,
        )
    finally:
        started.close()


def _drive(services: Services, plan: RunPlan, started: StartedRun, deadline: float, sleep) -> WaitResult:
    """Wait for the run; run the server tools it calls and submit their outputs, until it ends,
    asks the client, or has taken TOOL_MAX_ROUNDS model turns."""
    settings = services.settings
    while True:
        plan.rounds += 1
        result = _wait(services, plan, started, deadline)
        run = result.run
        if result.timed_out or run["status"] != "requires_action":
            return _finish(services, plan, result)
        calls = tool_calls(run)
        tools = {tool.name: tool for tool in plan.tools}
        if not calls or any(c["function"]["name"] not in tools for c in calls):
            log.info("run %s calls a tool it does not know; its calls are closed", plan.run_id)
            return _finish(services, plan, result)
        if plan.rounds >= settings.tool_max_rounds:
            return _finish(services, plan, result, failure=too_many_rounds(plan.rounds))
        server_calls = [(tools[c["function"]["name"]], c) for c in calls if tools[c["function"]["name"]].handler]
        outputs = call_all(server_calls, deadline, plan.run_id) if server_calls else {}
        if outputs is None:
            return _finish(services, plan, replace(result, timed_out=True))
        client_calls = [c for c in calls if c["id"] not in outputs]
        if client_calls:
            return _await_client(services, plan, result, outputs, client_calls)
        plan.usage = added_usage(plan.usage, run.get("usage"))
        started = _go_on(services, plan, run, [(c["id"], outputs[c["id"]]) for c in calls], deadline, sleep, result)
        if isinstance(started, WaitResult):
            return started


def _go_on(
    services: Services, plan: RunPlan, run: dict, outputs, deadline: float, sleep, result: WaitResult | None = None
) -> StartedRun | WaitResult:
    """Submit the outputs of the run's calls: the next upstream run, or how the run ended
    when the deadline left no time for it."""

    def submit(timeout: float) -> StartedRun:
        return services.engine.submit_tool_outputs(
            plan.thread_id,
            run,
            outputs,
            plan.assistant,
            plan.temperature,
            plan.top_p,
            timeout=timeout,
            stream=_streamed(services, plan),
            tools=plan.tools,
        )

    try:
        return _attempt(services, submit, deadline, sleep, f"submit tool outputs of {plan.run_id}")
    except DeadlineBeforeStart:
        result = result or WaitResult(run, timed_out=False, polls=0, transient_errors=0, waited=0.0)
        return _finish(services, plan, replace(result, timed_out=True))
    except UpstreamError:
        # The outputs surely did not arrive: close the calls, so that the thread stays usable.
        _release_requires_action(services, plan.thread_id, run)
        failed = ended_as(present(plan, run), "failed", last_error=NOT_SUBMITTED)
        services.records.run_ended(failed, [], plan.owner, plan.assistant.name)
        raise


def _await_client(
    services: Services, plan: RunPlan, result: WaitResult, outputs: dict[str, str], client_calls: list[dict]
) -> WaitResult:
    """Record the run as waiting for the client's outputs, and answer it."""
    settings = services.settings
    seconds = settings.tool_outputs_timeout_seconds
    expires_at = time.time() + seconds
    run = present(plan, result.run, client_calls=client_calls, expires_at=expires_at)
    pending = plan.pending(result.run, outputs, expires_at)
    services.records.await_outputs(run, pending, plan.owner, plan.assistant.name, seconds)
    if plan.emit is not None:
        plan.emit("thread.run.requires_action", run)
    metrics.run_finished(result)
    log.info("run %s waits for the client's outputs of %d call(s)", plan.run_id, len(client_calls))
    return replace(result, run=run, last=Poll(run), awaits_client=True)


def _finish(services: Services, plan: RunPlan, result: WaitResult, failure: dict | None = None) -> WaitResult:
    """Settle the run upstream (calls closed, or cancelled at the deadline) and record its end."""
    settings = services.settings
    last = result.last or Poll(result.run)
    if result.run["status"] == "requires_action":
        last = _release_requires_action(services, plan.thread_id, result.run) or last
    elif result.timed_out and settings.run_cancel_on_timeout:
        last = _cancel_and_settle(services, plan.thread_id, result.run["id"]) or Poll(result.run)
    # The answer shows the run as the wait saw it end; the record, as it is now upstream.
    run, recorded = present(plan, result.run), present(plan, last.run)
    if failure is not None:
        run = recorded = ended_as(recorded, "failed", last_error=failure)
    elif result.run["status"] == "requires_action":
        # Its calls were closed (or the run cancelled, on the assistants engine): it goes no further.
        if recorded["status"] == "requires_action":
            recorded = ended_as(recorded, "cancelled")
        if result.timed_out:
            run = recorded
    messages = tuple(dict(m, run_id=plan.run_id) for m in last.messages)
    services.records.run_ended(recorded, list(messages), plan.owner, plan.assistant.name)
    if plan.emit is not None:
        # A stream ends with the run as the backend left it: cancelled at the deadline, or with its calls closed.
        settled = result.timed_out or result.run["status"] == "requires_action"
        _emit_end(services, plan.emit, recorded if settled else run, messages)
    metrics.run_finished(result)
    log.info(
        "run %s final status %s after %.2fs (%d polls, %d transient errors, %d model turns)",
        plan.run_id,
        "timeout" if result.timed_out else run["status"],
        result.waited,
        result.polls,
        result.transient_errors,
        plan.rounds,
    )
    return replace(result, run=run, last=Poll(run, last.poll_after_ms, messages))


def _emit_end(services: Services, emit: Emit, run: dict, messages: tuple) -> None:
    """The stream's last events: the run's messages, then the run."""
    messages = list(messages)
    if not messages and run["status"] in ("completed", "incomplete"):
        try:  # engines that learn the messages apart from the run
            page = MessagePage(limit=100, order="asc", run_id=run["id"])
            listed = services.engine.list_messages(run["thread_id"], page)
            messages = [m for m in listed["data"] if m["role"] == "assistant"]
        except UpstreamError as exc:
            log.warning("run %s: its messages could not be read for the stream: %s", run["id"], exc)
    for message in messages:
        emit("thread.message.completed", message)
    emit(f"thread.run.{run['status']}", run)


def _expire_if_due(services: Services, recorded: RecordedRun) -> RecordedRun:
    """A run whose wait for the client's outputs has run out is expired: its calls closed, the record ended."""
    pending = recorded.pending
    if pending is None or time.time() < pending["expires_at"]:
        return recorded
    if not services.records.take_pending(recorded.run["id"], pending, 0):
        return services.records.run(recorded.run["id"]) or recorded
    _release_requires_action(services, recorded.run["thread_id"], pending["run"])
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


def retrieve(services: Services, owner: str, thread_id: str, run_id: str) -> tuple[dict, int | None]:
    """The run now, without waiting (from the record once it has ended or while it waits for
    the client's tool outputs), and when to look again if it is active."""
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is not None:
        recorded = _expire_if_due(services, recorded)
        if recorded.final or recorded.pending is not None:
            return recorded.run, None
    upstream_id = (recorded.upstream_id if recorded else None) or run_id
    try:
        poll = services.engine.get_run(thread_id, upstream_id)
    except UpstreamNotFound:
        if recorded is None:
            raise not_found("run", run_id) from None
        return recorded.run, None  # the upstream has forgotten it; the record has not
    run = poll.run
    if recorded is not None:
        run = dict(run, id=run_id, created_at=recorded.run["created_at"])
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
            _release_requires_action(services, thread_id, recorded.pending["run"])
            cancelled = ended_as(recorded.run, "cancelled")
            services.records.run_ended(cancelled, [], owner, recorded.pending["assistant_type"])
            return cancelled
        if recorded.final:
            status = recorded.run["status"]
            raise ApiError(400, f"Cannot cancel run with status '{status}'.")
    upstream_id = (recorded.upstream_id if recorded else None) or run_id
    try:
        run = services.engine.cancel_run(thread_id, upstream_id)
    except UpstreamNotFound:
        raise not_found("run", run_id) from None  # the same answer as for another user's run
    if recorded is not None:
        run = dict(run, id=run_id, created_at=recorded.run["created_at"])
        services.records.save_run(run, owner, "unknown", final=run["status"] not in ACTIVE_STATUSES)
    return run

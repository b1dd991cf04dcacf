"""A run's life upstream once it is being started: each attempt inside the deadline, the
waits, the rounds of server tools, the turn handed to the client, and how it is settled
and recorded at its end (no HTTP)."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from dataclasses import replace

from app import metrics, usage
from app.contract import (
    MessagePage,
    Poll,
    StartedRun,
    UpstreamError,
    UpstreamTransient,
    maybe_sent,
)
from app.engines.client import QUICK_CALL_SECONDS
from app.environment import CANCEL_GRACE_SECONDS
from app.rounds import RunPlan, added_usage, ended_as, present, too_many_rounds, tool_calls
from app.services import Services
from app.tools import call_all
from app.waiting import MIN_DELAY_SECONDS, PollSchedule, WaitResult, wait_for_run

log = logging.getLogger("app.runs")

NOT_SUBMITTED = {"code": "server_error", "message": "The upstream refused the tool outputs; see the server log."}

# Tells a streamed answer what happens: emit(Assistants stream event name, its data).
Emit = Callable[[str, object], None]


def _call_seconds(deadline: float) -> float:
    """The timeout of one look or cancel: short, and never past `deadline`."""
    return max(0.05, min(QUICK_CALL_SECONDS, deadline - time.monotonic()))


def cancel_and_settle(services: Services, thread_id: str, run_id: str) -> Poll | None:
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
    usage.record_run(services, None, None, settled.run)  # usage: a run the backend cancelled, once it has ended
    return Poll(settled.run)


def release_requires_action(services: Services, thread_id: str, run: dict) -> Poll | None:
    """Leave the thread usable after a run that stopped for function calls."""
    try:
        if services.engine.close_open_calls(thread_id, run, CANCEL_GRACE_SECONDS):
            return None
    except UpstreamError as exc:
        log.warning("run %s: could not close its function calls: %s", run["id"], exc)
        return None
    return cancel_and_settle(services, thread_id, run["id"])


class DeadlineBeforeStart(Exception):
    """The deadline passed before the upstream accepted the run."""


class CreateUnconfirmed(Exception):
    """The create may have reached the upstream, but no run came back."""


def attempt(services: Services, start: Callable[[float], StartedRun], deadline: float, sleep, what: str) -> StartedRun:
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


def streamed(services: Services, plan: RunPlan) -> bool:
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
        result = wait_for_run(
            lambda: services.engine.get_run(plan.thread_id, upstream_id, _call_seconds(deadline)),
            started.run,
            timeout=max(0.0, deadline - time.monotonic()),
            schedule=services.schedule,
            watch=watch,
            emit=emit,
        )
    finally:
        started.close()
    usage.record_run(services, plan.owner, plan.assistant.name, result.run, plan.run_id)  # usage: each round's end
    return result


def drive(services: Services, plan: RunPlan, started: StartedRun, deadline: float, sleep) -> WaitResult:
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
        started = go_on(services, plan, run, [(c["id"], outputs[c["id"]]) for c in calls], deadline, sleep, result)
        if isinstance(started, WaitResult):
            return started


def go_on(
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
            stream=streamed(services, plan),
            tools=plan.tools,
        )

    try:
        return attempt(services, submit, deadline, sleep, f"submit tool outputs of {plan.run_id}")
    except DeadlineBeforeStart:
        result = result or WaitResult(run, timed_out=False, polls=0, transient_errors=0, waited=0.0)
        return _finish(services, plan, replace(result, timed_out=True))
    except UpstreamError:
        # The outputs surely did not arrive: close the calls, so that the thread stays usable.
        release_requires_action(services, plan.thread_id, run)
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
        last = release_requires_action(services, plan.thread_id, result.run) or last
    elif result.timed_out and settings.run_cancel_on_timeout:
        last = cancel_and_settle(services, plan.thread_id, result.run["id"]) or Poll(result.run)
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

"""Runs: start one and wait for it on the server, retrieve one, cancel one (no HTTP)."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable

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
from app.errors import ApiError, not_found, thread_busy
from app.services import Services
from app.store.records import RecordedRun
from app.threads import require_thread
from app.waiting import MIN_DELAY_SECONDS, PollSchedule, WaitResult, wait_for_run

log = logging.getLogger("app.runs")

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


def _emit_end(services: Services, emit, result: WaitResult, last: Poll) -> None:
    """The stream's last events: the run's messages, then the run as the answer reports it
    (after a timeout, as the cancel left it; nothing when it is still active)."""
    run = last.run if result.timed_out else result.run
    messages = list(last.messages)
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


class DeadlineBeforeStart(Exception):
    """The deadline passed before the upstream accepted the run."""


class CreateUnconfirmed(Exception):
    """The create may have reached the upstream, but no run came back."""


def _create(
    services: Services,
    thread_id: str,
    assistant: AssistantType,
    temperature,
    top_p,
    deadline: float,
    sleep,
    stream: bool = False,
) -> StartedRun:
    """Create the run inside the deadline: each attempt bounded by the time left, and
    retried only when the upstream surely did not receive it (connect error, 429)."""
    settings = services.settings
    backoff = 0.25
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineBeforeStart()
        try:
            return services.engine.start_run(
                thread_id,
                assistant,
                temperature,
                top_p,
                timeout=min(left, settings.upstream_timeout_seconds),
                stream=stream or settings.wait_strategy == "stream",
            )
        except UpstreamError as exc:
            if maybe_sent(exc):
                raise CreateUnconfirmed(str(exc)) from None
            if not isinstance(exc, UpstreamTransient):
                raise
            delay = max(MIN_DELAY_SECONDS, exc.retry_after if exc.retry_after is not None else backoff)
            if time.monotonic() + delay >= deadline:
                raise
            log.info("create run on %s: %s (not sent); trying again in %.2fs", thread_id, exc, delay)
            sleep(delay)
            backoff = min(backoff * 2, 4.0)


def start_and_wait(
    services: Services,
    owner: str,
    thread_id: str,
    assistant: AssistantType,
    temperature,
    top_p,
    arrived: float | None = None,
    sleep=time.sleep,
    emit: Callable[[str, object], None] | None = None,
) -> WaitResult:
    """Start a run and wait for its end; the result holds the run as the wait last saw it.

    The deadline runs from `arrived` (time.monotonic() when the request came in). Raises
    DeadlineBeforeStart or CreateUnconfirmed when no run could be started or confirmed.
    With `emit(event_name, data)` the run is followed as Assistants stream events
    (app/stream_events.py): `thread.run.created`, `thread.run.<status>` as statuses change,
    `thread.message.delta` as text arrives, then `thread.message.completed` and the final
    `thread.run.<status>` once the run is recorded.
    """
    settings = services.settings
    deadline = (time.monotonic() if arrived is None else arrived) + settings.run_timeout_seconds
    require_thread(services, owner, thread_id)
    holder = f"starting-{uuid.uuid4().hex}"
    if not services.records.lock_thread(thread_id, holder, settings.run_timeout_seconds + LOCK_MARGIN_SECONDS):
        require_thread(services, owner, thread_id)  # no lock to take on a thread deleted meanwhile: 404
        raise thread_busy(thread_id, services.records.active_run(thread_id))
    metrics.run_started()
    started = None
    try:
        try:
            started = _create(
                services, thread_id, assistant, temperature, top_p, deadline, sleep, stream=emit is not None
            )
        except CreateUnconfirmed as exc:
            # A run may exist upstream: the thread's lock and the Idempotency-Key stay
            # taken until they expire, so that nothing starts a second run beside it.
            log.warning("run on %s: creation unconfirmed (%s); the thread stays locked", thread_id, exc)
            holder = None
            raise
        run = started.run
        services.records.run_started(thread_id, holder, run, owner, assistant.name)
        holder = run["id"]
        log.info("run %s created on %s (status %s, type %s)", run["id"], thread_id, run["status"], assistant.name)
        watch = started.watch
        if emit is not None:
            emit("thread.run.created", run)
            watch = watch and functools.partial(watch, emit=emit)
        result = wait_for_run(
            lambda: services.engine.get_run(thread_id, run["id"], _call_seconds(deadline)),
            run,
            timeout=max(0.0, deadline - time.monotonic()),
            schedule=services.schedule,
            watch=watch,
            emit=emit,
        )
        started.close()
        metrics.run_finished(result)
        log.info(
            "run %s final status %s after %.2fs (%d polls, %d transient errors)",
            run["id"],
            "timeout" if result.timed_out else result.run["status"],
            result.waited,
            result.polls,
            result.transient_errors,
        )
        last = result.last or Poll(result.run)
        if result.run["status"] == "requires_action":
            last = _release_requires_action(services, thread_id, result.run) or last
        elif result.timed_out and settings.run_cancel_on_timeout:
            last = _cancel_and_settle(services, thread_id, run["id"]) or Poll(result.run)
        services.records.run_ended(last.run, list(last.messages), owner, assistant.name)
        holder = None
        if emit is not None:
            _emit_end(services, emit, result, last)
    finally:
        if started is not None:
            started.close()
        metrics.run_ended()
        if holder is not None:  # the wait broke off: free the thread all the same
            services.records.unlock_thread(thread_id, holder)
    return result


def _owned_run_record(services: Services, thread_id: str, run_id: str) -> RecordedRun | None:
    recorded = services.records.run(run_id)
    if recorded is not None and recorded.run["thread_id"] != thread_id:
        raise not_found("run", run_id)
    return recorded


def retrieve(services: Services, owner: str, thread_id: str, run_id: str) -> tuple[dict, int | None]:
    """The run now, without waiting (from the record once it has ended), and when to look again if it is active."""
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is not None and recorded.final:
        return recorded.run, None
    try:
        poll = services.engine.get_run(thread_id, run_id)
    except UpstreamNotFound:
        if recorded is None:
            raise not_found("run", run_id) from None
        return recorded.run, None  # the upstream has forgotten it; the record has not
    if recorded is not None:
        _remember(services, poll, owner, "unknown")
    poll_after = None
    if poll.run["status"] in ACTIVE_STATUSES:
        poll_after = poll.poll_after_ms or services.settings.poll_max_ms
    return poll.run, poll_after


def cancel(services: Services, owner: str, thread_id: str, run_id: str) -> dict:
    """Ask the upstream to cancel the run."""
    require_thread(services, owner, thread_id)
    recorded = _owned_run_record(services, thread_id, run_id)
    if recorded is not None and recorded.final:
        status = recorded.run["status"]
        raise ApiError(400, f"Cannot cancel run with status '{status}'.")
    try:
        run = services.engine.cancel_run(thread_id, run_id)
    except UpstreamNotFound:
        raise not_found("run", run_id) from None  # the same answer as for another user's run
    if recorded is not None:
        services.records.save_run(run, owner, "unknown", final=run["status"] not in ACTIVE_STATUSES)
    return run

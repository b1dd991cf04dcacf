"""Runs: start one and wait for it on the server, retrieve one, cancel one."""

from __future__ import annotations

import logging
import time
import uuid

from app import metrics
from app.backend import Backend
from app.engines.base import Poll, StartedRun, UpstreamError, UpstreamNotFound, UpstreamTransient, maybe_sent
from app.engines.client import QUICK_CALL_SECONDS
from app.errors import NO_RETRY, ApiError, not_found, thread_busy
from app.threads import require_thread
from app.waiting import (
    ACTIVE_STATUSES,
    MIN_DELAY_SECONDS,
    TIMEOUT_OUTCOME,
    PollSchedule,
    outcome_of,
    wait_for_run,
)

log = logging.getLogger("app.runs")

# After a cancel, how long to wait for the upstream to confirm it, so that the
# thread takes the next message. Part of the timeout chain (see README).
CANCEL_GRACE_SECONDS = 5.0
# The lock outlives the wait by this much, for the cancel and the bookkeeping.
LOCK_MARGIN_SECONDS = CANCEL_GRACE_SECONDS + 10.0


def _remember(backend: Backend, poll: Poll, owner: str, assistant_type: str) -> None:
    run = poll.run
    final = run["status"] not in ACTIVE_STATUSES
    backend.records.save_run(run, owner, assistant_type, final)
    if poll.messages:
        backend.records.add_messages(run["thread_id"], list(poll.messages), run_id=run["id"])


def _call_seconds(deadline: float) -> float:
    """The timeout of one look or cancel: short, and never past `deadline`."""
    return max(0.05, min(QUICK_CALL_SECONDS, deadline - time.monotonic()))


def _cancel_and_settle(backend: Backend, thread_id: str, run_id: str) -> Poll | None:
    """Cancel the run upstream and wait briefly until the cancel has taken.

    The cancel and the looks after it share CANCEL_GRACE_SECONDS, part of the timeout chain.
    """
    grace_ends = time.monotonic() + CANCEL_GRACE_SECONDS
    try:
        cancelled = backend.engine.cancel_run(thread_id, run_id, _call_seconds(grace_ends))
    except UpstreamError as exc:
        log.warning("run %s: cancel failed: %s", run_id, exc)
        return None
    settled = wait_for_run(
        lambda: backend.engine.get_run(thread_id, run_id, _call_seconds(grace_ends)),
        cancelled,
        timeout=max(0.1, grace_ends - time.monotonic()),
        schedule=PollSchedule(first_ms=50, max_ms=500),
    )
    log.info("run %s: cancelled upstream, now %s", run_id, settled.run["status"])
    return Poll(settled.run)


def _release_requires_action(backend: Backend, thread_id: str, run: dict) -> Poll | None:
    """Leave the thread usable after a run that stopped for function calls."""
    try:
        if backend.engine.close_open_calls(thread_id, run, CANCEL_GRACE_SECONDS):
            return None
    except UpstreamError as exc:
        log.warning("run %s: could not close its function calls: %s", run["id"], exc)
        return None
    return _cancel_and_settle(backend, thread_id, run["id"])


class CreateUnconfirmed(Exception):
    """The create may have reached the upstream, but no run came back."""


def _create(backend: Backend, thread_id: str, assistant, temperature, top_p, deadline: float, sleep) -> StartedRun:
    """Create the run inside the deadline: each attempt bounded by the time left, and
    retried only when the upstream surely did not receive it (connect error, 429)."""
    settings = backend.settings
    backoff = 0.25
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ApiError(408, TIMEOUT_OUTCOME.error.format(seconds=f"{settings.run_timeout_seconds:g}"))
        try:
            return backend.engine.start_run(
                thread_id,
                assistant,
                temperature,
                top_p,
                timeout=min(left, settings.upstream_timeout_seconds),
                stream=settings.wait_strategy == "stream",
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


def unconfirmed() -> ApiError:
    return ApiError(
        504,
        "The upstream did not confirm the run in time; it may still be running. The thread stays busy "
        "until it would have ended; read its messages later.",
        headers=NO_RETRY,
    )


def start_and_wait(
    backend: Backend, owner: str, thread_id: str, assistant, temperature, top_p, arrived=None, sleep=time.sleep
):
    """Start a run, wait for its end, and return (HTTP status, body, headers).

    The deadline runs from `arrived` (time.monotonic() when the request came in).
    """
    settings = backend.settings
    deadline = (time.monotonic() if arrived is None else arrived) + settings.run_timeout_seconds
    require_thread(backend, owner, thread_id)
    holder = f"starting-{uuid.uuid4().hex}"
    if not backend.records.lock_thread(thread_id, holder, settings.run_timeout_seconds + LOCK_MARGIN_SECONDS):
        require_thread(backend, owner, thread_id)  # no lock to take on a thread deleted meanwhile: 404
        raise thread_busy(thread_id, backend.records.active_run(thread_id))
    metrics.run_started()
    started = None
    try:
        try:
            started = _create(backend, thread_id, assistant, temperature, top_p, deadline, sleep)
        except CreateUnconfirmed as exc:
            # A run may exist upstream: the thread's lock and the Idempotency-Key stay
            # taken until they expire, so that nothing starts a second run beside it.
            log.warning("run on %s: creation unconfirmed (%s); the thread stays locked", thread_id, exc)
            holder = None
            raise unconfirmed() from None
        run = started.run
        backend.records.run_started(thread_id, holder, run, owner, assistant.name)
        holder = run["id"]
        log.info("run %s created on %s (status %s, type %s)", run["id"], thread_id, run["status"], assistant.name)

        last = Poll(run)

        def get_run():
            nonlocal last
            last = backend.engine.get_run(thread_id, run["id"], _call_seconds(deadline))
            return last

        def watch(timeout):
            nonlocal last
            watched = started.watch(timeout)
            last = watched or last
            return watched

        result = wait_for_run(
            get_run,
            run,
            timeout=max(0.0, deadline - time.monotonic()),
            schedule=backend.schedule,
            watch=watch if started.watch is not None else None,
        )
        started.close()
        outcome, error = outcome_of(result, settings.run_timeout_seconds)
        metrics.run_finished(result)
        log.info(
            "run %s final status %s after %.2fs (%d polls, %d transient errors) -> HTTP %d",
            run["id"],
            "timeout" if result.timed_out else result.run["status"],
            result.waited,
            result.polls,
            result.transient_errors,
            outcome.http_status,
        )
        if result.run["status"] == "requires_action":
            last = _release_requires_action(backend, thread_id, result.run) or Poll(result.run)
        elif result.timed_out and settings.run_cancel_on_timeout:
            last = _cancel_and_settle(backend, thread_id, run["id"]) or Poll(result.run)
        backend.records.run_ended(last.run, list(last.messages), owner, assistant.name)
        holder = None
    finally:
        if started is not None:
            started.close()
        metrics.run_ended()
        if holder is not None:  # the wait broke off: free the thread all the same
            backend.records.unlock_thread(thread_id, holder)

    if error is None:
        return outcome.http_status, result.run, {}
    body = {"error": error, "runStatus": result.run["status"], "run": result.run}
    return outcome.http_status, body, NO_RETRY


def _owned_run_record(backend: Backend, thread_id: str, run_id: str):
    recorded = backend.records.run(run_id)
    if recorded is not None and recorded[0]["thread_id"] != thread_id:
        raise not_found("run", run_id)
    return recorded


def retrieve(backend: Backend, owner: str, thread_id: str, run_id: str):
    """The run now, without waiting; from the record once it has ended."""
    require_thread(backend, owner, thread_id)
    recorded = _owned_run_record(backend, thread_id, run_id)
    if recorded is not None and recorded[1]:
        return recorded[0], None
    try:
        poll = backend.engine.get_run(thread_id, run_id)
    except UpstreamNotFound:
        if recorded is None:
            raise not_found("run", run_id) from None
        return recorded[0], None  # the upstream has forgotten it; the record has not
    if recorded is not None:
        _remember(backend, poll, owner, "unknown")
    poll_after = None
    if poll.run["status"] in ACTIVE_STATUSES:
        poll_after = poll.poll_after_ms or backend.settings.poll_max_ms
    return poll.run, poll_after


def cancel(backend: Backend, owner: str, thread_id: str, run_id: str) -> dict:
    """Ask the upstream to cancel the run."""
    require_thread(backend, owner, thread_id)
    recorded = _owned_run_record(backend, thread_id, run_id)
    if recorded is not None and recorded[1]:
        status = recorded[0]["status"]
        raise ApiError(400, f"Cannot cancel run with status '{status}'.")
    try:
        run = backend.engine.cancel_run(thread_id, run_id)
    except UpstreamNotFound:
        raise not_found("run", run_id) from None  # the same answer as for another user's run
    if recorded is not None:
        backend.records.save_run(run, owner, "unknown", final=run["status"] not in ACTIVE_STATUSES)
    return run

"""Waiting for a run on the server, and what each way a wait ends means in HTTP.

`wait_for_run` is a plain function: the run getter, the clock and the sleep are
arguments, so tests drive it without real waiting.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.engines.base import Poll, UpstreamTransient

log = logging.getLogger("app.runs")

ACTIVE_STATUSES = frozenset({"queued", "in_progress", "cancelling"})
# The shortest pause between two looks at a run, whatever the schedule or the upstream
# says: a `Retry-After: 0` or `openai-poll-after-ms: 0` must not become a tight loop.
# 50 ms bounds a wait to 20 looks a second. Only the first look of a wait may be immediate.
MIN_DELAY_SECONDS = 0.05


@dataclass(frozen=True)
class Outcome:
    """The HTTP answer to one way a wait can end; `error` is None on success."""

    http_status: int
    error: str | None


# The contract's run-status table, read by the views, the docs and the tests.
FINAL_STATUS_OUTCOMES = {
    "completed": Outcome(200, None),
    "incomplete": Outcome(200, None),
    "requires_action": Outcome(400, "Run requires action (function calling not implemented)"),
    "failed": Outcome(500, "Run failed: {reason}"),
    "expired": Outcome(410, "Run expired"),
    "cancelled": Outcome(400, "Run was cancelled"),
}
TIMEOUT_OUTCOME = Outcome(408, "Run timeout exceeded {seconds} seconds")
UNEXPECTED_OUTCOME = Outcome(500, "Run ended with unexpected status: {status}")


@dataclass(frozen=True)
class PollSchedule:
    """When to look next: soon after creation, then less often, up to a cap."""

    first_ms: int = 500
    max_ms: int = 1000
    growth: float = 1.5
    immediate_first_look: bool = False

    @classmethod
    def fixed(cls, interval_ms: int = 1000) -> PollSchedule:
        """The original algorithm: look at once, then every `interval_ms`."""
        return cls(first_ms=interval_ms, max_ms=interval_ms, growth=1.0, immediate_first_look=True)

    def delays(self):
        """Seconds to sleep before each look, for ever."""
        if self.immediate_first_look:
            yield 0.0
        delay = self.first_ms
        while True:
            yield delay / 1000
            delay = min(delay * self.growth, self.max_ms)


@dataclass(frozen=True)
class WaitResult:
    """How a wait ended: the last run seen, and whether the deadline cut it."""

    run: dict
    timed_out: bool
    polls: int
    transient_errors: int
    waited: float


def wait_for_run(
    get_run: Callable[[], Poll],
    run: dict,
    *,
    timeout: float,
    schedule: PollSchedule = PollSchedule(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    watch: Callable[[float], Poll | None] | None = None,
) -> WaitResult:
    """Poll `get_run` until the run leaves the active statuses or `timeout` seconds pass.

    With `watch` (the streaming strategy), first block on it for the whole budget;
    polling then only covers what the stream could not tell.
    """
    started = clock()
    deadline = started + timeout
    delays = schedule.delays()
    polls = errors = 0
    if watch is not None and run["status"] in ACTIVE_STATUSES:
        watched = watch(timeout)
        if watched is not None:
            run = watched.run
            log.debug("run %s status %s from its event stream (%.2fs)", run["id"], run["status"], clock() - started)
        else:
            delays = itertools.chain([0.0], delays)  # the stream could not tell: look now
    backoff = 0.25
    hint: float | None = None
    while run["status"] in ACTIVE_STATUSES:
        delay = next(delays)
        if hint is not None:
            delay = hint
        if polls:
            delay = max(delay, MIN_DELAY_SECONDS)
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(run, True, polls, errors, clock() - started)
        sleep(min(delay, remaining))
        polls += 1
        try:
            poll = get_run()
        except UpstreamTransient as exc:
            errors += 1
            hint = exc.retry_after if exc.retry_after is not None else backoff
            backoff = min(backoff * 2, 4.0)
            log.info(
                "run %s poll %d: transient upstream error (%s), looking again in %.2fs", run["id"], polls, exc, hint
            )
            continue
        run = poll.run
        hint = poll.poll_after_ms / 1000 if poll.poll_after_ms is not None else None
        log.debug(
            "run %s status %s (poll %d, %.1fs of %gs)", run["id"], run["status"], polls, clock() - started, timeout
        )
    return WaitResult(run, False, polls, errors, clock() - started)


def outcome_of(result: WaitResult, timeout: float) -> tuple[Outcome, str | None]:
    """The table row for a finished wait and its filled-in error message."""
    if result.timed_out:
        return TIMEOUT_OUTCOME, TIMEOUT_OUTCOME.error.format(seconds=f"{timeout:g}")
    status = result.run["status"]
    outcome = FINAL_STATUS_OUTCOMES.get(status)
    if outcome is None:
        return UNEXPECTED_OUTCOME, UNEXPECTED_OUTCOME.error.format(status=status)
    if outcome.error is None:
        return outcome, None
    reason = (result.run.get("last_error") or {}).get("message") or "Unknown error"
    return outcome, outcome.error.format(reason=reason)

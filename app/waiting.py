"""Waiting for a run on the server: the loop, its schedule and its result (no HTTP).

`wait_for_run` is a plain function: the run getter, the clock and the sleep are
arguments, so tests drive it without real waiting.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.contract import ACTIVE_STATUSES, Poll, UpstreamTransient

log = logging.getLogger("app.runs")

# The shortest pause between two looks at a run, whatever the schedule or the upstream
# says: a `Retry-After: 0` or `openai-poll-after-ms: 0` must not become a tight loop.
# 50 ms bounds a wait to 20 looks a second. Only the first look of a wait may be immediate.
MIN_DELAY_SECONDS = 0.05


@dataclass(frozen=True)
class PollSchedule:
    """When to look next: soon after creation, then less often, up to a cap."""

    first_ms: int = 500
    max_ms: int = 1000
    growth: float = 1.5
    immediate_first_look: bool = False
    # Moves a look later when the process is over its budget (app/pacing.py); None: never.
    pace: Callable[[float], float] | None = None

    @classmethod
    def fixed(cls, interval_ms: int) -> PollSchedule:
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
    """How a wait ended: the last run seen, and whether the deadline cut it.

    `last` is the last look that succeeded, with the messages it brought.
    """

    run: dict
    timed_out: bool
    polls: int
    transient_errors: int
    waited: float
    last: Poll | None = None
    awaits_client: bool = False  # the run stopped for tool calls that its client must answer


def wait_for_run(
    get_run: Callable[[], Poll],
    run: dict,
    *,
    timeout: float,
    schedule: PollSchedule = PollSchedule(),
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    watch: Callable[[float], Poll | None] | None = None,
    emit: Callable[[str, dict], None] | None = None,
) -> WaitResult:
    """Poll `get_run` until the run leaves the active statuses or `timeout` seconds pass.

    With `watch` (the streaming strategy), first block on it for the whole budget;
    polling then only covers what the stream could not tell. `emit` hears of each new
    active status a look finds (`thread.run.<status>`); the end is the caller's to tell.
    """
    started = clock()
    deadline = started + timeout
    delays = schedule.delays()
    polls = errors = 0
    last = Poll(run)
    if watch is not None and run["status"] in ACTIVE_STATUSES:
        watched = watch(timeout)
        if watched is not None:
            last = watched
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
            return WaitResult(run, True, polls, errors, clock() - started, last)
        sleep(min(schedule.pace(delay) if schedule.pace else delay, remaining))
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
        if emit is not None and poll.run["status"] != run["status"] and poll.run["status"] in ACTIVE_STATUSES:
            emit(f"thread.run.{poll.run['status']}", poll.run)
        last = poll
        run = poll.run
        hint = poll.poll_after_ms / 1000 if poll.poll_after_ms is not None else None
        log.debug(
            "run %s status %s (poll %d, %.1fs of %gs)", run["id"], run["status"], polls, clock() - started, timeout
        )
    return WaitResult(run, False, polls, errors, clock() - started, last)

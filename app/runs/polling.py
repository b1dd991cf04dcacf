"""Polling a run on the server: the wait loop, its schedule, its result, and the process's budget of looks (no HTTP).

`wait_for_run` is a plain function: the run getter, the clock and the sleep are
arguments, so tests drive it without real waiting. With `follow` (WAIT_STRATEGY=stream,
or a streamed answer) it first reads the upstream event stream, and polls only for
what that could not tell.

`LookBudget` keeps a per-process budget of looks at runs per second, so that polling
degrades gracefully. Each waiting run asks for its next look `wanted` seconds from now.
Time is cut into short windows, each with room for `per_second * WINDOW` looks; a look
goes into the window it wants when there is room, else into the first later window
that has some, spread evenly inside it; then to the nearest tick (10 ms), so that
the looks due together wake the process together. Under the budget a look keeps its
time, to the tick; over it, every run's intervals stretch by about the same amount
instead of the process saturating its CPU and every request queueing behind the
looks. Thread- and greenlet-safe: the lock is held for a few dictionary operations only.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.contract import ACTIVE_STATUSES, Follow, Poll, UpstreamTransient
from app.runs.events import RunListener

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
    # Moves a look later when the process is over its budget (`LookBudget` below); None: never.
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
    follow: Follow | None = None,
    listener: RunListener | None = None,
) -> WaitResult:
    """Poll `get_run` until the run leaves the active statuses or `timeout` seconds pass.

    With `follow` (reading the upstream event stream), first block on `follow(timeout,
    listener)` for the whole budget; polling then only covers what the upstream events
    could not tell. `listener` hears of each new active status a look finds; the end is
    the caller's to tell.
    """
    started = clock()
    deadline = started + timeout
    delays = schedule.delays()
    polls = errors = 0
    last = Poll(run)
    if follow is not None and run["status"] in ACTIVE_STATUSES:
        followed = follow(timeout, listener)
        if followed is not None:
            last = followed
            run = followed.run
            log.debug("run %s status %s from its upstream events (%.2fs)", run["id"], run["status"], clock() - started)
        else:
            delays = itertools.chain([0.0], delays)  # the upstream events could not tell: look now
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
        if listener is not None and poll.run["status"] != run["status"] and poll.run["status"] in ACTIVE_STATUSES:
            listener.status_changed(poll.run)
        last = poll
        run = poll.run
        hint = poll.poll_after_ms / 1000 if poll.poll_after_ms is not None else None
        log.debug(
            "run %s status %s (poll %d, %.1fs of %gs)", run["id"], run["status"], polls, clock() - started, timeout
        )
    return WaitResult(run, False, polls, errors, clock() - started, last)


WINDOW = 0.05  # seconds
# Every look is moved to the nearest multiple of TICK on the monotonic clock, so that the looks due
# within the same few milliseconds wake the process once rather than one by one (a third less CPU
# per look at 3,000 waiting runs: docs/benchmarks.md). The nearest, not the next: moved later
# each time, a run's looks would drift later and later behind its schedule (and its lag grow).
TICK = 0.01  # seconds


class LookBudget:
    """At most about `per_second` looks a second in this process, booked ahead."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic, window: float = WINDOW):
        self.window = window
        self.room = max(1, round(per_second * window))  # looks per window
        self.clock = clock
        self._booked: dict[int, int] = {}  # window number -> looks booked in it
        self._lock = threading.Lock()

    def delay(self, wanted: float) -> float:
        """Seconds to wait before the next look: `wanted`, or later when its window is full; then
        to the nearest tick."""
        now = self.clock()
        first = int((now + wanted) / self.window)
        with self._lock:
            slot = first
            while self._booked.get(slot, 0) >= self.room:
                slot += 1
            taken = self._booked.get(slot, 0)
            self._booked[slot] = taken + 1
            if len(self._booked) > 256:
                self._forget_before(int(now / self.window))
        at = now + wanted if slot == first else (slot + taken / self.room) * self.window
        return max(0.0, round(at / TICK) * TICK - now)

    def _forget_before(self, window: int) -> None:
        for old in [w for w in self._booked if w < window]:
            del self._booked[old]

"""A per-process budget of looks at runs per second, so that polling degrades gracefully.

Each waiting run asks for its next look `wanted` seconds from now. Time is cut
into short windows, each with room for `per_second * WINDOW` looks; a look goes
into the window it wants when there is room, else into the first later window
that has some, spread evenly inside it. Under the budget nothing moves; over it,
every run's intervals stretch by about the same amount instead of the process
saturating its CPU and every request queueing behind the looks.

Thread- and greenlet-safe: the lock is held for a few dictionary operations only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WINDOW = 0.05  # seconds


class LookBudget:
    """At most about `per_second` looks a second in this process, booked ahead."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic, window: float = WINDOW):
        self.window = window
        self.room = max(1, round(per_second * window))  # looks per window
        self.clock = clock
        self._booked: dict[int, int] = {}  # window number -> looks booked in it
        self._lock = threading.Lock()

    def delay(self, wanted: float) -> float:
        """Seconds to wait before the next look: `wanted`, or later when its window is full."""
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
        if slot == first:
            return wanted
        return (slot + taken / self.room) * self.window - now

    def _forget_before(self, window: int) -> None:
        for old in [w for w in self._booked if w < window]:
            del self._booked[old]

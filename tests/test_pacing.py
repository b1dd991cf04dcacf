"""The per-process budget of looks (app/runs/polling.py), with an injected clock, and in wait_for_run."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest

from app.engines.base import Poll
from app.runs.polling import LookBudget, PollSchedule, wait_for_run


class Clock:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


def test_under_the_budget_every_look_keeps_its_time():
    clock = Clock()
    budget = LookBudget(100, clock)
    assert [budget.delay(1.0) for _ in range(5)] == pytest.approx([1.0] * 5)  # 5 of the 5 a window holds
    assert budget.delay(0.5) == pytest.approx(0.5)


def test_looks_due_near_a_tick_wake_together_on_it():
    clock = Clock(1000.0)
    budget = LookBudget(1000, clock)
    assert [budget.delay(d) for d in (0.5051, 0.508, 0.51, 0.5149)] == pytest.approx([0.51] * 4)
    assert budget.delay(0.5049) == pytest.approx(0.50)  # the nearest tick: no drift later and later
    clock.now = 1000.0037
    assert budget.delay(0.0) == 0.0  # never a negative wait
    assert budget.delay(0.002) == pytest.approx(0.0063)


def test_over_the_budget_looks_stretch_evenly_and_keep_the_rate():
    clock = Clock()
    budget = LookBudget(100, clock)  # 5 looks per 50 ms window
    delays = sorted(budget.delay(1.0) for _ in range(500))  # 500 runs all wanting a look in 1 s
    assert delays[:5] == pytest.approx([1.0] * 5)
    assert 5.9 < delays[-1] < 6.05  # 500 looks at 100 a second: the last about 5 s later
    per_window = Counter(int((clock.now + d) / 0.05 + 1e-9) for d in delays)
    assert max(per_window.values()) == 5
    gaps = [b - a for a, b in zip(delays[5:], delays[6:], strict=False)]
    assert max(gaps) < 0.011 and min(gaps) >= 0  # spread inside each window, not bunched at its start


def test_a_look_wanted_earlier_is_not_pushed_behind_later_ones():
    clock = Clock()
    budget = LookBudget(100, clock)
    for _ in range(50):
        budget.delay(2.0)  # the windows around 2 s are full
    assert budget.delay(0.5) == pytest.approx(0.5)


def test_the_booking_forgets_the_past():
    clock = Clock()
    budget = LookBudget(20, clock)
    for _ in range(2000):
        budget.delay(0.0)
        clock.now += 0.05
    assert len(budget._booked) <= 257
    assert budget.delay(0.2) == pytest.approx(0.2, abs=0.01)  # at most a tick later


def test_wait_for_run_sleeps_what_the_budget_says():
    clock = Clock()
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    budget = LookBudget(20, clock)  # one look per window
    for _ in range(40):
        budget.delay(1.0)  # other runs have booked the second ahead
    statuses = iter(["in_progress", "completed"])
    schedule = replace(PollSchedule(first_ms=1000, max_ms=1000), pace=budget.delay)
    result = wait_for_run(
        lambda: Poll({"id": "run_1", "status": next(statuses)}),
        {"id": "run_1", "status": "queued"},
        timeout=60,
        schedule=schedule,
        clock=clock,
        sleep=sleep,
    )
    assert result.run["status"] == "completed" and result.polls == 2
    assert slept[0] > 2.9  # the 40 looks booked before it, one per 50 ms


def test_the_budget_never_moves_a_look_past_the_deadline():
    clock = Clock()
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        clock.now += seconds

    budget = LookBudget(20, clock)
    for _ in range(1000):
        budget.delay(0.0)
    schedule = replace(PollSchedule(), pace=budget.delay)
    result = wait_for_run(
        lambda: Poll({"id": "run_1", "status": "in_progress"}),
        {"id": "run_1", "status": "queued"},
        timeout=5,
        schedule=schedule,
        clock=clock,
        sleep=sleep,
    )
    assert result.timed_out and slept == [5]

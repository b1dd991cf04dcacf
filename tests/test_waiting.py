"""wait_for_run with an injected clock and sleep: no real waiting."""

from __future__ import annotations

import pytest

from app.api.outcomes import FINAL_STATUS_OUTCOMES, TIMEOUT_OUTCOME, UNEXPECTED_OUTCOME, outcome_of
from app.contract import Poll, UpstreamTransient
from app.runs.polling import MIN_DELAY_SECONDS, PollSchedule, WaitResult, wait_for_run


class FakeTime:
    """A monotonic clock that only moves when the code under test sleeps."""

    def __init__(self):
        self.now = 100.0
        self.sleeps: list[float] = []

    def clock(self):
        return self.now

    def sleep(self, seconds):
        assert len(self.sleeps) < 10_000, "a tight loop: the clock does not move"
        self.sleeps.append(seconds)
        self.now += seconds


def scripted(timeline, time, hint=None):
    """A get_run whose run becomes each status of `timeline` at the given instants."""

    def get_run():
        status = [s for at, s in timeline if time.now - 100.0 >= at][-1]
        if isinstance(status, Exception):
            raise status
        return Poll({"id": "run_1", "status": status}, hint)

    return get_run


def test_polls_until_the_run_ends_and_counts_polls():
    time = FakeTime()
    get_run = scripted([(0, "queued"), (0.5, "in_progress"), (3.0, "completed")], time)
    result = wait_for_run(get_run, {"id": "run_1", "status": "queued"}, timeout=60, clock=time.clock, sleep=time.sleep)
    assert result.run["status"] == "completed" and not result.timed_out
    assert result.polls == len(time.sleeps)
    assert 3.0 <= result.waited <= 4.0


def test_schedule_starts_soon_grows_and_caps():
    delays = PollSchedule(first_ms=100, max_ms=1000, growth=2).delays()
    assert [next(delays) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]


def test_fixed_schedule_is_the_original_algorithm():
    delays = PollSchedule.fixed(1000).delays()
    assert [next(delays) for _ in range(4)] == [0.0, 1.0, 1.0, 1.0]


def test_deadline_is_measured_on_the_clock_not_in_attempts():
    time = FakeTime()
    get_run = scripted([(0, "in_progress")], time)
    result = wait_for_run(
        get_run,
        {"id": "run_1", "status": "queued"},
        timeout=5,
        clock=time.clock,
        sleep=time.sleep,
        schedule=PollSchedule(first_ms=300, max_ms=300),
    )
    assert result.timed_out and result.run["status"] == "in_progress"
    assert result.waited == pytest.approx(5.0)
    assert sum(time.sleeps) == pytest.approx(5.0)  # the last sleep is cut to the deadline


def test_upstream_pacing_hint_replaces_our_schedule():
    time = FakeTime()
    get_run = scripted([(0, "in_progress"), (10, "completed")], time, hint=2500)
    wait_for_run(get_run, {"id": "run_1", "status": "queued"}, timeout=60, clock=time.clock, sleep=time.sleep)
    assert time.sleeps[0] == pytest.approx(0.5) and set(time.sleeps[1:]) == {2.5}


def test_transient_errors_are_retried_with_backoff_inside_the_deadline():
    time = FakeTime()
    flaky = UpstreamTransient("503", status=503)
    get_run = scripted([(0, flaky), (2.0, "completed")], time)
    result = wait_for_run(get_run, {"id": "run_1", "status": "queued"}, timeout=60, clock=time.clock, sleep=time.sleep)
    assert result.run["status"] == "completed"
    assert result.transient_errors >= 2
    assert time.sleeps[1:3] == [0.25, 0.5]  # doubling backoff


def test_retry_after_of_a_transient_error_is_honoured():
    time = FakeTime()
    limited = UpstreamTransient("429", status=429, retry_after=3.0)
    get_run = scripted([(0, limited), (1.0, "completed")], time)
    wait_for_run(get_run, {"id": "run_1", "status": "queued"}, timeout=60, clock=time.clock, sleep=time.sleep)
    assert time.sleeps[1] == 3.0


def test_an_upstream_that_stays_down_ends_in_the_deadline():
    time = FakeTime()
    get_run = scripted([(0, UpstreamTransient("down"))], time)
    result = wait_for_run(get_run, {"id": "run_1", "status": "queued"}, timeout=10, clock=time.clock, sleep=time.sleep)
    assert result.timed_out and result.waited == pytest.approx(10.0)


def test_a_run_that_has_already_ended_is_not_polled():
    time = FakeTime()
    result = wait_for_run(
        lambda: 1 / 0, {"id": "run_1", "status": "completed"}, timeout=10, clock=time.clock, sleep=time.sleep
    )
    assert result.polls == 0 and time.sleeps == []


@pytest.mark.parametrize(
    "status,http,message",
    [
        ("completed", 200, None),
        ("incomplete", 200, None),
        ("requires_action", 400, "Run requires action (function calling not implemented)"),
        ("failed", 500, "Run failed: boom"),
        ("expired", 410, "Run expired"),
        ("cancelled", 400, "Run was cancelled"),
        ("weird", 500, "Run ended with unexpected status: weird"),
    ],
)
def test_status_table(status, http, message):
    run = {"id": "run_1", "status": status, "last_error": {"code": "x", "message": "boom"}}
    outcome, error = outcome_of(WaitResult(run, False, 1, 0, 1.0), 60)
    assert (outcome.http_status, error) == (http, message)
    assert outcome in (*FINAL_STATUS_OUTCOMES.values(), UNEXPECTED_OUTCOME)


def test_failed_without_last_error_says_unknown_error():
    outcome, error = outcome_of(WaitResult({"id": "r", "status": "failed", "last_error": None}, False, 1, 0, 1), 60)
    assert error == "Run failed: Unknown error"


def test_timeout_row():
    outcome, error = outcome_of(WaitResult({"id": "r", "status": "in_progress"}, True, 5, 0, 60), 60)
    assert outcome is TIMEOUT_OUTCOME and error == "Run timeout exceeded 60 seconds"


@pytest.mark.parametrize(
    "failing", [UpstreamTransient("429", status=429, retry_after=0.0), None], ids=["retry-after-0", "poll-after-0"]
)
def test_a_zero_hint_does_not_make_a_tight_loop(failing):
    time = FakeTime()
    get_run = scripted([(0, failing or "in_progress")], time, hint=None if failing else 0)
    result = wait_for_run(get_run, {"id": "run_1", "status": "queued"}, timeout=1, clock=time.clock, sleep=time.sleep)
    assert result.timed_out
    assert result.polls <= 1 / MIN_DELAY_SECONDS + 1
    assert min(time.sleeps[1:-1]) >= MIN_DELAY_SECONDS  # the last sleep is cut to the deadline


def test_only_the_first_look_may_be_immediate():
    time = FakeTime()
    get_run = scripted([(0, "in_progress"), (1.0, "completed")], time)
    wait_for_run(
        get_run,
        {"id": "run_1", "status": "queued"},
        timeout=10,
        clock=time.clock,
        sleep=time.sleep,
        schedule=PollSchedule(first_ms=0, max_ms=0, immediate_first_look=True),
    )
    assert time.sleeps[0] == 0.0 and set(time.sleeps[1:]) == {MIN_DELAY_SECONDS}


def test_a_cancelling_run_is_waited_for_until_cancelled():
    time = FakeTime()
    get_run = scripted([(0, "in_progress"), (0.2, "cancelling"), (1.0, "cancelled")], time)
    seen = []

    def recording():
        poll = get_run()
        seen.append(poll.run["status"])
        return poll

    run = {"id": "run_1", "status": "queued"}
    result = wait_for_run(recording, run, timeout=10, clock=time.clock, sleep=time.sleep)
    assert result.run["status"] == "cancelled" and not result.timed_out
    assert "cancelling" in seen and seen[-1] == "cancelled"
    assert outcome_of(result, 10) == (FINAL_STATUS_OUTCOMES["cancelled"], "Run was cancelled")

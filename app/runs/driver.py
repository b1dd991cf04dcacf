"""A run's life upstream once it is being started, driven by one `RunDriver` (no HTTP).

The driver holds what a run's rounds share (the services, the plan, the deadline, the
sleep and the listener) and carries the run: each attempt to create it (or submit
tool outputs) inside the deadline, the waits (app/runs/polling.py), the rounds of
server tools, the turn handed to the client, and how it is settled and recorded at
its end. Every run that leaves it (to the record, the answer or the listener) is
shown as the client's one run (`RunPlan.present`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace

from app import metrics, usage
from app.contract import (
    ACTIVE_STATUSES,
    MessagePage,
    Poll,
    StartedRun,
    UpstreamError,
    UpstreamNotFound,
    UpstreamTransient,
)
from app.engines.client import QUICK_CALL_SECONDS
from app.environment import CANCEL_GRACE_SECONDS
from app.runs.errors import CreateFailed, CreateUnconfirmed, DeadlineBeforeStart
from app.runs.events import RunListener
from app.runs.plan import RunPlan, added_usage, ended_as, too_many_rounds, tool_calls
from app.runs.polling import MIN_DELAY_SECONDS, PollSchedule, WaitResult, wait_for_run
from app.runs.steps import StepBook, function_step_call
from app.services import Services
from app.tools import call_all

log = logging.getLogger("app.runs")

LOST_UPSTREAM = {
    "code": "upstream_lost",
    "message": "The upstream no longer knows this run (it may have been reset); its end is unknown.",
}
NOT_SUBMITTED = {"code": "server_error", "message": "The upstream refused the tool outputs; see the server log."}


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
    usage.record_run(services, None, None, settled.run)  # a run the backend cancelled, once it has ended
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


class _Held:
    """A run listener's calls held back (when there is a listener) until `release`, then passed on
    in their order: what a streamed answer is told after the record shows it."""

    def __init__(self, listener: RunListener | None):
        self.listener = listener
        self.calls: list[tuple[str, tuple]] = []

    def __getattr__(self, name: str):
        return lambda *args: self.calls.append((name, args))

    def or_none(self) -> _Held | None:
        return self if self.listener is not None else None

    def release(self) -> None:
        if self.listener is not None:
            for name, args in self.calls:
                getattr(self.listener, name)(*args)
        self.calls = []


class _ClientView:
    """Passes what the engine and the wait tell on to the run's listener (if any), each upstream
    run shown as the client's one run (which notes when it started), and a reply's text after
    its step has begun."""

    def __init__(self, plan: RunPlan, listener: RunListener | None, steps: StepBook):
        self.plan = plan
        self.listener = listener
        self.steps = steps
        self.hears_text = listener is not None  # else the engine may skip a reply's text as it comes

    def created(self, run: dict) -> None:
        self.status_changed(run)

    def status_changed(self, run: dict) -> None:
        self.steps.run = run = self.plan.present(run)
        if self.listener is not None:
            self.listener.status_changed(run)

    def text_appended(self, message_id: str, index: int, text: str) -> None:
        self.steps.reply_started(message_id)
        if self.listener is not None:
            self.listener.text_appended(message_id, index, text)

    def citation_added(self, message_id: str, index: int, text: str, annotation: dict) -> None:
        if self.listener is not None:
            self.listener.citation_added(message_id, index, text, annotation)

    def message_completed(self, message: dict) -> None:
        self.steps.reply_started(message["id"])
        if self.listener is not None:
            self.listener.message_completed(message)

    def tool_calls_made(self, calls: list[dict]) -> None:
        self.steps.calls_made(calls, answered=True)


class RunDriver:
    """Carries one run from its creation (or the client's tool outputs) to its end, or to
    the client's turn; `listener` (a streamed answer) hears of its progress."""

    def __init__(
        self, services: Services, plan: RunPlan, deadline: float, sleep=time.sleep, listener: RunListener | None = None
    ):
        self.services = services
        self.settings = services.settings
        self.engine = services.engine
        self.records = services.records
        self.plan = plan
        self.deadline = deadline
        self.sleep = sleep
        self.listener = listener
        # Whether to read the upstream event stream: always for a streamed answer.
        self.follow_upstream = listener is not None or self.settings.wait_strategy == "stream"
        self.steps = StepBook(services.records, listener)
        self.upstream_listener = _ClientView(plan, listener, self.steps)

    def start(self, holder: str) -> WaitResult:
        """Create the run upstream, record it (the thread's lock passes from `holder` to
        the run), and drive it to its end."""
        plan = self.plan
        self.steps.fresh = True  # a new run: every step it has is in this book
        started = self._attempt(f"create run on {plan.thread_id}")
        plan.run_id, plan.created_at = started.run["id"], started.run["created_at"]
        self.steps.run = run = plan.present(started.run)
        self.records.run_started(plan.thread_id, holder, run, plan.owner, plan.assistant.name)
        if self.listener is not None:
            self.listener.created(run)
        log.debug(  # at INFO, the run's one line is its end (below)
            "run %s created on %s (status %s, type %s)",
            plan.run_id,
            plan.thread_id,
            started.run["status"],
            plan.assistant.name,
        )
        return self.drive(started)

    def resume(self, run: dict, outputs: list[tuple[str, str]]) -> WaitResult:
        """Submit the outputs of every call of `run` (the client's and the server's), and
        drive the run on to its end."""
        self.steps.run = self.plan.present(run)
        started = self.go_on(run, outputs)
        if isinstance(started, WaitResult):
            return started
        self.steps.outputs_known(self.plan.run_id, dict(outputs), usage=run.get("usage"))
        return self.drive(started)

    def _attempt(self, what: str, run: dict | None = None, outputs=None) -> StartedRun:
        """Create the upstream run (or, with `outputs`, submit them) inside the deadline: each
        attempt bounded by the time left, and retried only when the upstream surely did not
        receive it (connect error, 429)."""
        backoff = 0.25
        while True:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise DeadlineBeforeStart()
            timeout = min(left, self.settings.upstream_timeout_seconds)
            tried_at = time.time()
            try:
                if outputs is None:
                    return self._create(timeout)
                return self._submit(run, outputs, timeout)
            except UpstreamError as exc:
                if exc.maybe_sent:
                    found = self._look_after_create(exc, tried_at) if outputs is None else None
                    if found is not None:
                        return found
                    raise CreateUnconfirmed(str(exc)) from None
                if not isinstance(exc, UpstreamTransient):
                    raise
                delay = max(MIN_DELAY_SECONDS, exc.retry_after if exc.retry_after is not None else backoff)
                if time.monotonic() + delay >= self.deadline:
                    raise
                log.info("%s: %s (not sent); trying again in %.2fs", what, exc, delay)
                self.sleep(delay)
                backoff = min(backoff * 2, 4.0)

    def _look_after_create(self, exc: UpstreamError, tried_at: float) -> StartedRun | None:
        """After a create that may have reached the upstream, look for the run it made, where the
        upstream can tell: the run if it exists (this request waits for it); CreateFailed when
        the upstream answered a 5xx and no run exists; None when nothing can tell."""
        thread_id = self.plan.thread_id
        try:
            can_tell, newest = self.engine.newest_run(thread_id, _call_seconds(self.deadline))
        except UpstreamError as look_failed:
            log.info("create run on %s: %s; the look for its run failed too (%s)", thread_id, exc, look_failed)
            return None
        if newest is not None and self.records.run(newest["id"]) is None:
            # The thread is locked by this request: a run the record does not know is the one it made.
            if newest["status"] in ACTIVE_STATUSES or newest["created_at"] >= int(tried_at) - 1:
                log.warning("create run on %s: %s, but the run %s exists; waiting for it", thread_id, exc, newest["id"])
                return StartedRun(newest)
        if can_tell and exc.status is not None:
            log.warning("create run on %s: %s, and no run was made; the thread is free", thread_id, exc)
            raise CreateFailed(str(exc))
        return None

    def _create(self, timeout: float) -> StartedRun:
        plan = self.plan
        return self.engine.start_run(
            plan.thread_id,
            plan.assistant,
            plan.temperature,
            plan.top_p,
            timeout=timeout,
            follow=self.follow_upstream,
            tools=plan.tools,
            options=plan.options,
            **plan.knowledge(),
        )

    def _submit(self, run: dict, outputs, timeout: float) -> StartedRun:
        plan = self.plan
        return self.engine.submit_tool_outputs(
            plan.thread_id,
            run,
            outputs,
            plan.assistant,
            plan.temperature,
            plan.top_p,
            timeout=timeout,
            follow=self.follow_upstream,
            tools=plan.tools,
            options=plan.options,
            **plan.knowledge(),
        )

    def _look(self) -> Poll:
        """One look at the current upstream run."""
        return self.engine.get_run(self.plan.thread_id, self.upstream_id, _call_seconds(self.deadline))

    def _wait(self, started: StartedRun) -> WaitResult:
        self.upstream_id = started.run["id"]
        if self.upstream_id != self.plan.run_id:
            self.records.run_progress(self.plan.run_id, self.upstream_id)
        try:
            result = wait_for_run(
                self._look,
                started.run,
                timeout=max(0.0, self.deadline - time.monotonic()),
                schedule=self.services.schedule,
                follow=started.follow,
                listener=self.upstream_listener,
            )
        except UpstreamNotFound:
            # Forgotten upstream (reset, or its data expired): the run ends here, failed, and the thread is free.
            log.warning(
                "run %s: the upstream no longer knows %s; recorded as failed", self.plan.run_id, self.upstream_id
            )
            lost = ended_as(self.plan.present(started.run), "failed", last_error=LOST_UPSTREAM)
            self.records.run_ended(lost, [], self.plan.owner, self.plan.assistant.name)
            raise
        finally:
            started.close()
        if result.run["status"] == "requires_action":  # a tool round's response ended; a run's end is in _finish
            usage.record_run(self.services, self.plan.owner, self.plan.assistant.name, result.run, self.plan.run_id)
        return result

    def drive(self, started: StartedRun) -> WaitResult:
        """Wait for the run; run the server tools it calls and submit their outputs, until it ends,
        asks the client, or has taken TOOL_MAX_ROUNDS model turns."""
        plan = self.plan
        while True:
            plan.rounds += 1
            result = self._wait(started)
            run = result.run
            self._round_calls(result)
            if result.timed_out or run["status"] != "requires_action":
                return self._finish(result)
            calls = tool_calls(run)
            tools = {tool.name: tool for tool in plan.tools}
            if not calls or any(c["function"]["name"] not in tools for c in calls):
                log.info("run %s calls a tool it does not know; its calls are closed", plan.run_id)
                return self._finish(result)
            if plan.rounds >= self.settings.tool_max_rounds:
                return self._finish(result, failure=too_many_rounds(plan.rounds))
            server_calls = [(tools[c["function"]["name"]], c) for c in calls if tools[c["function"]["name"]].handler]
            outputs = call_all(server_calls, self.deadline, plan.run_id) if server_calls else {}
            if outputs is None:
                return self._finish(replace(result, timed_out=True))
            client_calls = [c for c in calls if c["id"] not in outputs]
            if client_calls:
                self.steps.outputs_known(plan.run_id, outputs, final=False)
                return self._await_client(result, outputs, client_calls)
            plan.usage = added_usage(plan.usage, run.get("usage"))
            started = self.go_on(run, [(c["id"], outputs[c["id"]]) for c in calls], result)
            if isinstance(started, WaitResult):
                return started
            self.steps.outputs_known(plan.run_id, outputs, usage=run.get("usage"))

    def _round_calls(self, result: WaitResult) -> None:
        """The round's tool calls as a step (unless the upstream events told them already): open
        while the run waits for their outputs, else (tools the upstream ran itself) ended at once."""
        run = result.run
        calls = list(result.last.step_calls) if result.last is not None else []
        if not calls:
            calls = [function_step_call(c) for c in tool_calls(run)]
        if run["status"] == "requires_action":
            self.steps.calls_made(calls)
        else:  # the round's usage goes on its reply's step
            self.steps.calls_made(calls, answered=True)

    def go_on(self, run: dict, outputs, result: WaitResult | None = None) -> StartedRun | WaitResult:
        """Submit the outputs of the run's calls: the next upstream run, or how the run ended
        when the deadline left no time for it."""
        plan = self.plan
        try:
            return self._attempt(f"submit tool outputs of {plan.run_id}", run, outputs)
        except DeadlineBeforeStart:
            result = result or WaitResult(run, timed_out=False, polls=0, transient_errors=0, waited=0.0)
            return self._finish(replace(result, timed_out=True))
        except UpstreamError:
            # The outputs surely did not arrive: close the calls, so that the thread stays usable.
            release_requires_action(self.services, plan.thread_id, run)
            failed = ended_as(plan.present(run), "failed", last_error=NOT_SUBMITTED)
            self.records.run_ended(failed, [], plan.owner, plan.assistant.name)
            self.steps.run_ended(failed)
            raise

    def _await_client(self, result: WaitResult, outputs: dict[str, str], client_calls: list[dict]) -> WaitResult:
        """Record the run as waiting for the client's outputs, and answer it."""
        plan = self.plan
        seconds = self.settings.tool_outputs_timeout_seconds
        expires_at = time.time() + seconds
        run = plan.present(result.run, client_calls=client_calls, expires_at=expires_at)
        pending = plan.pending(result.run, outputs, expires_at)
        self.records.await_outputs(run, pending, plan.owner, plan.assistant.name, seconds)
        self.steps.save_open()
        if self.listener is not None:
            self.listener.status_changed(run)
        metrics.run_finished(result)
        log.info("run %s waits for the client's outputs of %d call(s)", plan.run_id, len(client_calls))
        return replace(result, run=run, last=Poll(run), awaits_client=True)

    def _finish(self, result: WaitResult, failure: dict | None = None) -> WaitResult:
        """Settle the run upstream (calls closed, or cancelled at the deadline) and record its end."""
        plan = self.plan
        last = result.last or Poll(result.run)
        if result.run["status"] == "requires_action":
            last = release_requires_action(self.services, plan.thread_id, result.run) or last
        elif result.timed_out and self.settings.run_cancel_on_timeout:
            last = cancel_and_settle(self.services, plan.thread_id, result.run["id"]) or Poll(result.run)
        # The answer shows the run as the wait saw it end (past the deadline, as it is after the
        # cancel); the record, as it is now upstream.
        run, recorded = plan.present(result.run), plan.present(last.run)
        if failure is not None:
            run = recorded = ended_as(recorded, "failed", last_error=failure)
        elif result.run["status"] == "requires_action":
            # Its calls were closed (or the run cancelled, on the assistants engine): it goes no further.
            if recorded["status"] == "requires_action":
                recorded = ended_as(recorded, "cancelled")
        if result.timed_out:
            run = recorded  # as it is after the cancel
        messages = tuple(dict(m, run_id=plan.run_id) for m in last.messages)
        # A streamed answer ends with the run as the backend left it: cancelled at the deadline,
        # or with its calls closed.
        settled = result.timed_out or result.run["status"] == "requires_action"
        told = recorded if settled else run
        replies = self._replies(told, messages)
        # The record first, in one transaction (the run, its messages, its steps, its usage, the
        # thread freed); then the listener hears what the record now shows.
        held = _Held(self.listener)
        with self.records.together():
            self.records.run_ended(recorded, list(messages), plan.owner, plan.assistant.name)
            usage.record_run(self.services, plan.owner, plan.assistant.name, result.run, plan.run_id)
            self._tell_end(told, replies, result.run.get("usage"), held)
        held.release()
        metrics.run_finished(result)
        log.info(
            "run %s on %s (type %s) final status %s after %.2fs (%d polls, %d transient errors, %d model turns)",
            plan.run_id,
            plan.thread_id,
            plan.assistant.name,
            "timeout" if result.timed_out else run["status"],
            result.waited,
            result.polls,
            result.transient_errors,
            plan.rounds,
        )
        return replace(result, run=run, last=Poll(run, last.poll_after_ms, messages))

    def _replies(self, run: dict, messages: tuple) -> list[dict]:
        """The run's reply messages, for their steps: from the run's end, or (engines that learn
        them apart from the run) read upstream."""
        if messages or run["status"] not in ("completed", "incomplete"):
            return list(messages)
        try:
            page = MessagePage(limit=100, order="asc", run_id=run["id"])
            listed = self.engine.list_messages(run["thread_id"], page)
        except UpstreamError as exc:
            log.warning("run %s: its messages could not be read for its steps: %s", run["id"], exc)
            return []
        return [m for m in listed["data"] if m["role"] == "assistant"]

    def _tell_end(self, run: dict, replies: list[dict], usage: dict | None, listener: _Held) -> None:
        """The last facts: the run's messages, each in its step (which ends with the round's
        `usage`), the end of the steps left open, then the run."""
        self.steps.run = run
        self.steps.listener = listener.or_none()
        for message in replies:
            self.steps.reply_started(message["id"])
            listener.message_completed(message)
            self.steps.reply_done(message["id"], usage)
        self.steps.run_ended(run)
        listener.status_changed(run)

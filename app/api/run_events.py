"""Streams a client can reattach to: each event of a streamed run numbered and published to the
event log (app/event_log.py), and `GET .../threads/{id}/runs/{run_id}/events` to read them again.

`RunPublisher` is the hook of a streamed answer: it gives every event the next sequence number
of its run (the SSE `id:`; a run's later stream, after `submit_tool_outputs`, goes on from the
last one) and hands it to the log: in memory at once, to Redis by a sender of its own, so that
the run never waits for Redis, and a Redis failure costs the reattaching clients only (a
warning, a metric), never the run or its first client.

The route answers the events after `Last-Event-ID` (or `?after=`; neither: from the first),
then follows the live ones to `done`; see docs/api.md ("Reattaching to a stream").
"""

from __future__ import annotations

import json
import logging
import threading
import time

from flask import Blueprint, Flask, Response, current_app, g, request, stream_with_context

from app import metrics
from app.api import authenticate_caller, services
from app.api import validation as v
from app.api.sse import DONE_FRAME, error_data, frame
from app.errors import ApiError, bad_request, not_found
from app.event_log import (
    EXTENSION_KEY,
    EventLogUnavailable,
    LoggedEvent,
    MemoryEventLog,
    Stream,
    make_event_log,
)
from app.runs.service import LOCK_MARGIN_SECONDS
from app.settings import Settings
from app.threads import require_thread

log = logging.getLogger("app.streams")

FOLLOW_WAIT_SECONDS = 1.0  # one blocking read of a follower
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

bp = Blueprint("run_events", __name__)
bp.before_request(authenticate_caller)


def event_log():
    """This app's event log."""
    return current_app.extensions[EXTENSION_KEY]


class RunPublisher:
    """Numbers the events of one streamed answer and publishes them to the event log."""

    def __init__(self, event_log, owner: str):
        self.log = event_log
        self.owner = owner
        self.run_id: str | None = None
        self.stream: Stream | None = None
        self.seq = 0
        self.failed = False
        self._lock = threading.Lock()
        self._outbox: list[LoggedEvent] = []
        self._sending = False
        self._early: list[LoggedEvent] = []  # numbered before the run was known

    def frame(self, name: str, data) -> str:
        """The server-sent event `name` with its `id:`, published to the log."""
        text = "[DONE]" if name == "done" else json.dumps(data, separators=(",", ":"))
        with self._lock:
            if self.run_id is None and _run_of(data):
                self._begin(name, *_run_of(data))
            self.seq += 1
            event = LoggedEvent(self.seq, name, text)
            if self.run_id is None:  # `thread.created` comes before the run: kept for its first event
                self._early.append(event)
            elif not self.failed:
                for each in (*self._early, event):
                    self._publish(each)
                self._early = []
        return event.frame()

    def _begin(self, name: str, run_id: str, thread_id: str) -> None:
        """Learn the run from its first event; a run's later stream goes on from its last number."""
        self.run_id = run_id
        self.stream = Stream(self.owner, thread_id)
        if name != "thread.run.created" and not self._early:
            try:
                self.seq = self.log.last_seq(self.run_id)
            except EventLogUnavailable as error:
                self._fail(error)

    def _publish(self, event: LoggedEvent) -> None:
        if isinstance(self.log, MemoryEventLog):  # a few microseconds: kept at once, in order
            self.log.append(self.run_id, self.stream, [event])
            return
        self._outbox.append(event)
        if not self._sending:
            self._sending = True
            threading.Thread(target=self._send, name="event-log-sender", daemon=True).start()

    def _send(self) -> None:
        """Hand the waiting events to Redis in batches, in order, until none wait."""
        while True:
            with self._lock:
                batch, self._outbox = self._outbox, []
                if not batch or self.failed:
                    self._sending = False
                    return
            try:
                self.log.append(self.run_id, self.stream, batch)
            except EventLogUnavailable as error:
                with self._lock:
                    self._fail(error)

    def _fail(self, error: EventLogUnavailable) -> None:
        """Stop publishing this run's events; its live stream goes on."""
        self.failed = True
        self._outbox = []
        metrics.event_log_error("publish")
        log.warning("event log unavailable: %s; run %s cannot be reattached to", error, self.run_id)


def _run_of(data) -> tuple[str, str] | None:
    """(run id, thread id) of an event's data that names its run: a run, a run step, a message."""
    if not isinstance(data, dict) or not data.get("thread_id"):
        return None
    if data.get("object") == "thread.run":
        return data["id"], data["thread_id"]
    return (data["run_id"], data["thread_id"]) if data.get("run_id") else None


def _after() -> int:
    """The last event the client has: Last-Event-ID, else ?after=, else none (0)."""
    raw = request.headers.get("Last-Event-ID") or request.args.get("after") or "0"
    if not raw.isdigit() or len(raw) > 12:
        raise bad_request("Last-Event-ID (or after) must be the id of an event of this run: a whole number.")
    return int(raw)


def _unavailable(error: EventLogUnavailable) -> ApiError:
    metrics.event_log_error("read")
    log.warning("event log unavailable: %s", error)
    return ApiError(503, "The stream's events cannot be read now; try again shortly.", headers={"Retry-After": "1"})


def _gone(run_id: str) -> ApiError:
    seconds = f"{services().settings.stream_replay_seconds:g}"
    return ApiError(
        410,
        f"The events of run '{run_id}' are no longer kept here: they are kept {seconds} s after its stream "
        "ended, and by this process only unless the servers share an event log (EVENT_LOG_URL). "
        "Read the run and the thread's messages instead.",
    )


@bp.get("/threads/<thread_id>/runs/<run_id>/events")
def reattach(thread_id, run_id):
    s = services()
    thread_id = v.checked_id(thread_id, "thread")
    run_id = v.checked_id(run_id, "run")
    after = _after()
    require_thread(s, g.user, thread_id)
    events = event_log()
    ended: list[LoggedEvent] = []
    try:
        stream = events.stream(run_id)
        first = events.read(run_id, after) if stream is not None else []
        if stream is not None and not first and after:
            ended = events.read(run_id, after - 1)[:1]
    except EventLogUnavailable as error:
        raise _unavailable(error) from None
    if stream is None or stream.owner != g.user or stream.thread_id != thread_id:
        recorded = s.records.run(run_id) if stream is None else None
        if recorded is not None and recorded.run["thread_id"] == thread_id:
            raise _gone(run_id)
        raise not_found("run", run_id)
    if first and first[0].seq > after + 1:
        raise _gone(run_id)  # the oldest events were trimmed (MAX_EVENTS_PER_RUN)
    if not first and after and ended and ended[0].seq == after and ended[0].name == "done":
        return Response(status=204)  # the client has the whole stream already
    idle_limit = s.settings.run_timeout_seconds + LOCK_MARGIN_SECONDS
    follow = _follow(events, run_id, after, first, idle_limit)
    return Response(stream_with_context(follow), mimetype="text/event-stream", headers=STREAM_HEADERS)


def _follow(events, run_id: str, after: int, batch: list[LoggedEvent], idle_limit: float):
    """The kept events, then the live ones, to `done`; a silent, lost or unreadable log ends the stream."""
    heard = time.monotonic()
    while True:
        for event in batch:
            yield event.frame()
            after = event.seq
            if event.name == "done":
                return
        if batch:
            heard = time.monotonic()
        elif time.monotonic() - heard > idle_limit:
            yield frame("error", error_data("The run's stream went silent; read the run.", "stream_timeout"))
            break
        try:
            batch = events.read(run_id, after, FOLLOW_WAIT_SECONDS)
        except EventLogUnavailable as error:
            metrics.event_log_error("read")
            log.warning("event log unavailable while following run %s: %s", run_id, error)
            yield frame("error", error_data("The stream's events cannot be read now; reattach.", "events_unavailable"))
            break
        if batch and batch[0].seq > after + 1:
            yield frame("error", error_data("Events of this run were lost; read the run.", "events_lost"))
            break
        if not batch and isinstance(events, MemoryEventLog) and events.stream(run_id) is None:
            yield frame("error", error_data("The run's events expired; read the run.", "events_expired"))
            break
    yield DONE_FRAME


def init_app(app: Flask, settings: Settings) -> None:
    """Make the app's event log; a run streams at most its deadline plus the lock's margin."""
    app.extensions[EXTENSION_KEY] = make_event_log(settings, settings.run_timeout_seconds + LOCK_MARGIN_SECONDS)

"""A streamed answer (`text/event-stream`) of a service that tells its progress to a `RunEvents` listener.

The service runs in a thread of its own (a greenlet under gevent) and puts its events
in a queue; the view waits for the first item before it answers. An exception before
the first event is raised in the view, so every check answers its usual JSON error;
after it, an ending is an `error` event. A client that goes away stops only the
reading: the service goes on to its end, and records it.

Every event, the closing `error` and `done` included, goes through the run's
`RunPublisher` (app/api/run_events.py), which gives it its `id:` and keeps it in the
event log for clients that reattach; the service's thread writes the stream's end, so
that the log has it whether or not the first client is still reading.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from flask import Response, current_app, g, stream_with_context

from app.api.run_events import RunPublisher, event_log
from app.api.sse import RunEvents, error_data
from app.contract import UpstreamError
from app.errors import ApiError, from_upstream

log = logging.getLogger("app.streams")

STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_END = object()


class _Failed:
    def __init__(self, error: BaseException):
        self.error = error


def streamed_answer(work: Callable[..., None], args: tuple, ends_by: float) -> Response:
    """Answer with the events of `work(*args, events)`, which runs in the background.

    `ends_by` (time.monotonic()) bounds the reading: should the service not have
    ended by then, the stream closes with an `error` event rather than hang.
    """
    items: queue.Queue = queue.Queue()
    publisher = RunPublisher(event_log(), g.user)
    events = RunEvents(lambda name, data: items.put(publisher.frame(name, data)))
    app = current_app._get_current_object()
    request_id = g.get("request_id")

    def run():
        with app.app_context():
            g.request_id = request_id  # the request's id on the service's log lines
            failed = False
            try:
                work(*args, events)
            except BaseException as error:
                failed = publisher.run_id is None
                if failed:  # before the first event: the view's JSON error; else after `thread.created`
                    items.put(_Failed(error))
                else:
                    events.error(_error_of(error))
            finally:
                if publisher.seq and not failed:
                    events.error(error_data("The run's end is unknown; read the thread's messages.", "run_unknown"))
                    items.put(publisher.frame("done", "[DONE]"))
                items.put(_END)

    threading.Thread(target=run, name="run-stream", daemon=True).start()
    first = items.get()
    if isinstance(first, _Failed):
        raise first.error
    if first is _END:
        raise RuntimeError("the service ended without an event")
    frames = stream_with_context(_frames(first, items, publisher, ends_by))  # the request's id on its log lines
    return Response(frames, mimetype="text/event-stream", headers=STREAM_HEADERS)


def _frames(item, items: queue.Queue, publisher: RunPublisher, ends_by: float):
    """The stream's frames as they come; those already waiting are sent together, in one write."""
    while item is not _END:
        if isinstance(item, _Failed):  # after `thread.created`, before the run
            yield publisher.frame("error", _error_of(item.error))
            yield publisher.frame("done", "[DONE]")
            break
        ready = [item]
        item = _waiting(items)
        while isinstance(item, str):
            ready.append(item)
            item = _waiting(items)
        yield "".join(ready)
        if item is not None:
            continue
        try:
            item = items.get(timeout=max(0.0, ends_by - time.monotonic()))
        except queue.Empty:
            log.error("a streamed run did not end in time; closing its stream")
            yield publisher.frame("error", error_data("The run did not end in time.", "stream_timeout"))
            yield publisher.frame("done", "[DONE]")
            break


def _waiting(items: queue.Queue):
    """The next item if one is already there, else None."""
    try:
        return items.get_nowait()
    except queue.Empty:
        return None


def _error_of(error: BaseException) -> dict:
    if isinstance(error, UpstreamError):
        log.warning("streamed run: upstream error: %s", error)
        return error_data(from_upstream(error).message, "upstream_error")
    if isinstance(error, ApiError):
        return error_data(error.message, "run_error")
    log.error("streamed run: internal error", exc_info=error)
    return error_data("Internal error; see the server log.", "internal_error")

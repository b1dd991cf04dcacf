"""Server-sent events of a background response: `GET /v1/responses/{id}?stream=true&starting_after=N`.

Events carry increasing `sequence_number`s: 1 `response.created`, 2 `response.in_progress`,
3 the terminal `response.completed` / `response.failed` / `response.incomplete`. A cancelled
response ends the stream with no terminal event (the client learns the status by a GET).
The generator sleeps on the response's `changed` event until the next instant of its life,
so thousands of open streams cost no CPU while they wait.
"""

import json

from .errors import bad_request
from .responses import _find_response

TERMINAL_EVENTS = {"completed": "response.completed", "failed": "response.failed", "incomplete": "response.incomplete"}
KEEPALIVE_SECONDS = 4.0


def _event(sequence, kind, response):
    payload = {"type": kind, "sequence_number": sequence, "response": response}
    return f"event: {kind}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n"


def open_stream(fake, response_id):
    """Check the response exists (lock held); the caller then iterates `events(...)` unlocked."""
    if fake.config.stream_mode == "refuse":
        raise bad_request("streaming is not available for this response", param="stream")
    return _find_response(fake, response_id)


def events(fake, response, starting_after):
    """Yield the SSE text of every event after `starting_after`, as the response lives."""
    sent = starting_after
    drop_after_first = fake.config.stream_mode == "drop"
    while True:
        with fake.lock:
            now = fake.now()
            response.advance(now)
            status, snapshot = response.status, response.to_api()
            wake_at = response.start_at if status == "queued" else response.end_at
        due = [(1, "response.created")]
        if status != "queued":
            due.append((2, "response.in_progress"))
        if status in TERMINAL_EVENTS:
            due.append((3, TERMINAL_EVENTS[status]))
        for sequence, kind in due:
            if sequence > sent:
                yield _event(sequence, kind, snapshot)
                sent = sequence
                if drop_after_first:
                    return
        if status not in ("queued", "in_progress"):
            return  # ended (terminal event sent), or cancelled: the stream closes
        timeout = max(0.0, wake_at - now) if response.outcome != "never" or status == "queued" else KEEPALIVE_SECONDS
        if response.changed.wait(min(timeout, KEEPALIVE_SECONDS)):
            response.changed.clear()
        elif timeout > KEEPALIVE_SECONDS:
            yield ": keep-alive\n\n"

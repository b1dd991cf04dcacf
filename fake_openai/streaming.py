"""Server-sent events of a background response created with `background: true, stream: true`.

The stream of `POST /v1/responses` starts at `response.created` (sequence 0);
`GET /v1/responses/{id}?stream=true&starting_after=N` replays the events after N, for
`stream_resume_seconds` after creation. A cancelled response ends the stream with no
terminal event (a guess). After `keepalive_seconds` of silence the stream sends
`{"type": "keepalive", "sequence_number": <last sent>}`. The generator sleeps on
`fake.changed` until the response's next instant, so open streams cost no CPU while they wait.
"""

from .errors import bad_request
from .events import sse
from .responses import find_response

NOT_STREAMED_MESSAGE = (
    "This response cannot be streamed because it was not created with 'background': true and 'stream': true."
)
EXPIRED_MESSAGE = "The stream of this response is no longer available; retrieve the response instead."
MAX_SLEEP = 1.0  # seconds; bounds how late a stream notices a closed client or a changed knob


def refuse_if_off(fake):
    """The `stream_mode=refuse` knob: every stream (at creation and on GET) answers 400."""
    if fake.config.stream_mode == "refuse":
        raise bad_request("streaming is not available for this response", param="stream")


def open_stream(fake, response_id):
    """Check the response may be streamed now (lock held); the caller then iterates `events(...)`."""
    refuse_if_off(fake)
    response = find_response(fake, response_id)
    if not response.streamable:
        raise bad_request(NOT_STREAMED_MESSAGE, param="stream")
    if fake.now() > response.created + fake.config.stream_resume_seconds:
        raise bad_request(EXPIRED_MESSAGE, param="starting_after")
    return response


def events(fake, response, starting_after=-1, at_creation=False):
    """Yield the SSE text of every event after `starting_after`, as the response lives.

    With the `stuck_if_aborted` knob, a creation stream closed by its client before
    the response started leaves the response `queued` for ever (seen on the forum).
    """
    stream = _events(fake, response, starting_after)
    try:
        yield from stream
    except GeneratorExit:
        if at_creation and fake.config.stuck_if_aborted:
            with fake.lock:
                if response.status == "queued":
                    response.stuck = True
        raise


def _events(fake, response, starting_after):
    cursor = starting_after
    drop_after_first = fake.config.stream_mode == "drop"
    quiet_since = fake.now()
    while True:
        keepalive = False
        with fake.lock:
            now = fake.now()
            response.advance(now)
            batch = response.events[cursor + 1 :]
            ended = not response.active
            interval = fake.config.keepalive_seconds
            if not batch and not ended:
                wake_at = response.next_change_at()
                if interval is not None:
                    wake_at = min(wake_at, quiet_since + interval)
                fake.changed.wait(max(0.0, min(wake_at - now, MAX_SLEEP)))
                keepalive = interval is not None and fake.now() >= quiet_since + interval
        if keepalive:
            yield sse({"type": "keepalive", "sequence_number": max(cursor, 0)})
            quiet_since = fake.now()
            continue
        for event in batch:
            yield sse(event)
            cursor = event["sequence_number"]
            quiet_since = now
            if drop_after_first:
                return
        if ended and not batch:
            return  # every event sent: terminal, or cancelled (no terminal event)

"""The event log of a streamed background response, in the order the Responses API sends it.

`response.created` (sequence 0) and `response.queued` at creation, `response.in_progress`
when it starts, then per output item `response.output_item.added`, its content or argument
deltas and `...done` events, `response.output_item.done`, and the terminal
`response.completed` / `response.failed` / `response.incomplete`. A cancelled response
logs nothing more (a guess: the real API documents no cancelled stream event).

A reply's text deltas (one per word) are written while the response is in progress,
spread evenly over that time (`Writing`); what is left is logged when it finishes.
"""

import json
import re

TERMINAL_EVENTS = {"completed": "response.completed", "failed": "response.failed", "incomplete": "response.incomplete"}


def log(job, kind, **fields):
    """Append one event to the response's log, numbered from 0."""
    event = {"type": kind, "sequence_number": len(job.events), **fields}
    job.events.append(event)


def created(response):
    """The events of creation."""
    snapshot = response.to_api()
    log(response, "response.created", response=snapshot)
    log(response, "response.queued", response=snapshot)


def started(response):
    """The event of the move to in_progress."""
    log(response, "response.in_progress", response=response.to_api())


class Writing:
    """A reply being written: its message item, its words, and when each is due.

    The words are cut at each annotation's `index`, so a `response.output_text.annotation.added`
    can come between the deltas exactly where its citation points.
    """

    def __init__(self, item, start, end, index=0):
        self.item = item
        part = item["content"][0]
        self.annotations = part.get("annotations") or []
        self.pieces, cut = [], 0
        for point in sorted(a["index"] for a in self.annotations) + [len(part["text"])]:
            self.pieces.extend(re.findall(r"\S+\s*|\s+", part["text"][cut:point]))
            cut = point
        self.start = start
        self.end = end
        self.index = index  # the item's output_index
        self.opened = False
        self.written = 0
        self.characters = 0  # of the text written so far
        self.annotated = 0  # annotations already announced

    def next_due(self):
        """When the next word is due (infinity once all are written)."""
        if self.written >= len(self.pieces):
            return float("inf")
        return self.start + (self.end - self.start) * (self.written + 1) / (len(self.pieces) + 1)


def write_due(response, now):
    """Log the words of the reply that are due by `now` (all of them with now=inf)."""
    writing = response.writing
    if writing is None:
        return
    where = {"item_id": writing.item["id"], "output_index": writing.index, "content_index": 0}
    if not writing.opened:
        writing.opened = True
        log(
            response,
            "response.output_item.added",
            output_index=writing.index,
            item={**writing.item, "status": "in_progress", "content": []},
        )
        log(response, "response.content_part.added", **where, part=_EMPTY_PART)
        _annotations_due(response, writing, where)
    while writing.written < len(writing.pieces) and writing.next_due() <= now:
        piece = writing.pieces[writing.written]
        log(response, "response.output_text.delta", **where, delta=piece, logprobs=[])
        writing.written += 1
        writing.characters += len(piece)
        _annotations_due(response, writing, where)


def _annotations_due(response, writing, where):
    """Announce the annotations whose index the written text has reached."""
    while writing.annotated < len(writing.annotations):
        annotation = writing.annotations[writing.annotated]
        if annotation["index"] > writing.characters:
            return
        log(
            response,
            "response.output_text.annotation.added",
            **where,
            annotation_index=writing.annotated,
            annotation=annotation,
        )
        writing.annotated += 1


def finished(response):
    """The output item events and the terminal event (none for a cancelled response)."""
    for index, item in enumerate(response.output):
        if item["type"] == "message":
            _message_events(response, index, item)
        elif item["type"] == "function_call":
            _function_call_events(response, index, item)
    kind = TERMINAL_EVENTS.get(response.status)
    if kind:
        log(response, kind, response=response.to_api())


_EMPTY_PART = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}


def _message_events(response, index, item):
    text = item["content"][0]["text"] if item["content"] else ""
    if response.writing is None or response.writing.item["id"] != item["id"]:
        response.writing = Writing(item, 0, 0, index)
    write_due(response, float("inf"))
    where = {"item_id": item["id"], "output_index": index, "content_index": 0}
    log(response, "response.output_text.done", **where, text=text, logprobs=[])
    log(response, "response.content_part.done", **where, part=item["content"][0] if item["content"] else _EMPTY_PART)
    log(response, "response.output_item.done", output_index=index, item=item)


def _function_call_events(response, index, item):
    log(
        response,
        "response.output_item.added",
        output_index=index,
        item={**item, "status": "in_progress", "arguments": ""},
    )
    where = {"item_id": item["id"], "output_index": index}
    log(response, "response.function_call_arguments.delta", **where, delta=item["arguments"])
    log(response, "response.function_call_arguments.done", **where, name=item["name"], arguments=item["arguments"])
    log(response, "response.output_item.done", output_index=index, item=item)


def sse(event):
    """One server-sent event frame."""
    return f"event: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"

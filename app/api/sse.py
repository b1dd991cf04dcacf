"""The Assistants v2 event stream of one run: event names and shapes, their order, and the SSE frames.

The run's driver and the engines tell neutral facts to a listener (app/runs/events.py);
`RunEvents` is that listener for a streamed answer, and turns the facts into the
events a client reads: `thread.run.created`, then each new status,
`thread.message.created` before a message's first `thread.message.delta`, the rest
of its text as a delta before `thread.message.completed`, each run step's
`thread.run.step.created` / `.in_progress` / `.delta` / its end where the driver tells
it (a `message_creation` step around its message's events), and the run's final
event, after which only `done`. A stream that creates its thread starts with
`thread.created`. Assistants event names exist here only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from app.contract import ACTIVE_STATUSES

DONE_FRAME = "event: done\ndata: [DONE]\n\n"


def frame(name: str, data) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def message_delta(message_id: str, text: str, index: int = 0, annotations: list[dict] | None = None) -> dict:
    """A `thread.message.delta` payload adding `text` to content part `index` (with the annotations
    of what it adds, each numbered by its position among the part's annotations)."""
    part = {"index": index, "type": "text", "text": {"value": text, "annotations": annotations or []}}
    return {"id": message_id, "object": "thread.message.delta", "delta": {"content": [part]}}


def step_delta(step_id: str, step_details: dict) -> dict:
    """A `thread.run.step.delta` payload adding `step_details` to step `step_id`."""
    return {"id": step_id, "object": "thread.run.step.delta", "delta": {"step_details": step_details}}


def error_data(message: str, code: str) -> dict:
    """The data of an `error` event (the official SDKs raise it as an APIError)."""
    return {"error": {"message": message, "type": "server_error", "code": code, "param": None}}


def _texts(message: dict) -> list[tuple[int, str, list[dict]]]:
    return [
        (i, part["text"]["value"], part["text"].get("annotations") or [])
        for i, part in enumerate(message.get("content") or [])
        if part["type"] == "text"
    ]


class RunEvents:
    """The listener of one streamed run (app/runs/events.py); `send(name, data)` receives the
    Assistants events to write."""

    def __init__(self, send: Callable[[str, object], None]):
        self.send = send
        self.run: dict | None = None
        self.status: str | None = None
        self.ended = False
        self.written: dict[str, dict[int, str]] = {}  # message id -> content index -> text sent
        self.cited: dict[tuple[str, int], int] = {}  # (message id, content index) -> annotations sent

    def created(self, run: dict) -> None:
        if not self.ended:
            self.run = run
            self.send("thread.run.created", run)
            self._status(run)

    def status_changed(self, run: dict) -> None:
        if not self.ended:
            self._status(run)

    def text_appended(self, message_id: str, index: int, text: str) -> None:
        if not self.ended:
            self._delta(message_delta(message_id, text, index))

    def citation_added(self, message_id: str, index: int, text: str, annotation: dict) -> None:
        if not self.ended:
            self._cite(message_id, index, text, annotation)

    def message_completed(self, message: dict) -> None:
        if not self.ended:
            self._completed(message)

    def step_created(self, step: dict) -> None:
        if not self.ended:
            self.send("thread.run.step.created", step)
            self.send("thread.run.step.in_progress", step)

    def step_delta(self, step_id: str, step_details: dict) -> None:
        if not self.ended:
            self.send("thread.run.step.delta", step_delta(step_id, step_details))

    def step_changed(self, step: dict) -> None:
        if not self.ended:
            self.send(f"thread.run.step.{step['status']}", step)

    def thread_created(self, thread: dict) -> None:
        """`thread.created`, first of a stream that creates its thread (`POST .../threads/runs`)."""
        if not self.ended:
            self.send("thread.created", thread)

    def error(self, data: dict) -> None:
        """The stream's `error` event (`error_data`), after which nothing more is sent."""
        if not self.ended:
            self.ended = True
            self.send("error", data)

    def _status(self, run: dict) -> None:
        self.run = run
        status = run["status"]
        if status != self.status:
            self.status = status
            self.send(f"thread.run.{status}", run)
        if status not in ACTIVE_STATUSES:
            self.ended = True

    def _open(self, message_id: str) -> dict[int, str]:
        """The text sent so far of a message, announcing the message on first sight."""
        if message_id not in self.written:
            self.written[message_id] = {}
            run = self.run or {}
            message = {
                "id": message_id,
                "object": "thread.message",
                "created_at": int(time.time()),
                "thread_id": run.get("thread_id"),
                "role": "assistant",
                "content": [],
                "assistant_id": run.get("assistant_id"),
                "run_id": run.get("id"),
                "attachments": [],
                "metadata": {},
                "status": "in_progress",
                "completed_at": None,
                "incomplete_at": None,
                "incomplete_details": None,
            }
            self.send("thread.message.created", message)
            self.send("thread.message.in_progress", message)
        return self.written[message_id]

    def _delta(self, delta: dict) -> None:
        written = self._open(delta["id"])
        for part in delta["delta"]["content"]:
            index = part["index"]
            written[index] = written.get(index, "") + part["text"]["value"]
        self.send("thread.message.delta", delta)

    def _cite(self, message_id: str, index: int, text: str, annotation: dict) -> None:
        """A citation's marker as a delta of its own, with its annotation."""
        key = (message_id, index)
        number = self.cited.get(key, 0)
        self.cited[key] = number + 1
        self._delta(message_delta(message_id, text, index, [dict(annotation, index=number)]))

    def _completed(self, message: dict) -> None:
        """The text not yet sent goes as deltas per content part (each citation's marker on its own,
        with its annotation), then the message itself."""
        written = self._open(message["id"])
        for index, text, cited in _texts(message):
            sent = written.get(index, "")
            if not text.startswith(sent):
                continue
            position = len(sent)
            for annotation in sorted(cited, key=lambda a: a["start_index"]):
                if annotation["start_index"] < position:
                    continue
                if annotation["start_index"] > position:
                    self._delta(message_delta(message["id"], text[position : annotation["start_index"]], index))
                self._cite(message["id"], index, text[annotation["start_index"] : annotation["end_index"]], annotation)
                position = annotation["end_index"]
            if position < len(text):
                self._delta(message_delta(message["id"], text[position:], index))
        name = "thread.message.incomplete" if message.get("status") == "incomplete" else "thread.message.completed"
        self.send(name, message)

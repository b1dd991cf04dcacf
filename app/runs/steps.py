"""A run's steps, as the Assistants API showed them: one `tool_calls` step per round of tool
calls and one `message_creation` step per reply (no HTTP).

The driver tells a `StepBook` what it learns of each round (the calls, their outputs, the
replies, the run's end); the book keeps each step in the record (`run_steps`) and tells the
run's listener, so that a streamed answer sends the step events in their place. The steps
are the same on both engines: built from what the driver sees, and on the responses engine
from the output items of each background response (`Poll.step_calls`).
"""

from __future__ import annotations

import time
import uuid

from app.contract import ACTIVE_STATUSES
from app.runs.events import RunListener
from app.store.records import Records

# How a run's end leaves the steps it had not finished.
END_OF_OPEN_STEP = {"failed": "failed", "cancelled": "cancelled", "expired": "expired"}
FILE_SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def function_step_call(call: dict, output: str | None = None) -> dict:
    """A function call (Assistants run shape) as a tool call of a `tool_calls` step."""
    function = call["function"]
    return {
        "id": call["id"],
        "type": "function",
        "function": {"name": function["name"], "arguments": function["arguments"], "output": output},
    }


def new_step(run: dict, kind: str, details: dict) -> dict:
    """A step of `run` just begun: `tool_calls` or `message_creation`, with its `step_details`."""
    return {
        "id": f"step_{uuid.uuid4().hex[:24]}",
        "object": "thread.run.step",
        "created_at": int(time.time()),
        "assistant_id": run.get("assistant_id"),
        "thread_id": run["thread_id"],
        "run_id": run["id"],
        "type": kind,
        "status": "in_progress",
        "step_details": {"type": kind, kind: details} if kind == "message_creation" else details,
        "last_error": None,
        "cancelled_at": None,
        "completed_at": None,
        "failed_at": None,
        "expired_at": None,
        "expires_at": None,
        "metadata": {},
        "usage": None,
    }


def ended_step(step: dict, status: str, last_error: dict | None = None, usage: dict | None = None) -> dict:
    """The step with its end: `completed`, `failed`, `cancelled` or `expired`."""
    now = int(time.time())
    ended = dict(step, status=status, usage=usage if usage is not None else step.get("usage"))
    ended[f"{status}_at"] = now
    if status == "failed":
        ended["last_error"] = {"code": "server_error", "message": (last_error or {}).get("message") or "Run failed"}
    return ended


def with_content(step: dict, include: tuple[str, ...]) -> dict:
    """The step as a client asked for it: file_search results' `content` only when `include` names it."""
    if FILE_SEARCH_CONTENT in include or step["type"] != "tool_calls":
        return step
    calls = []
    for call in step["step_details"]["tool_calls"]:
        if call["type"] == "file_search" and call["file_search"].get("results"):
            results = [{k: v for k, v in r.items() if k != "content"} for r in call["file_search"]["results"]]
            call = dict(call, file_search=dict(call["file_search"], results=results))
        calls.append(call)
    return dict(step, step_details=dict(step["step_details"], tool_calls=calls))


def end_open_steps(records: Records, run: dict) -> None:
    """The run has ended by the backend's hand (expired, cancelled): so do its unfinished steps."""
    book = StepBook(records, None)
    book.run = run
    book.run_ended(run)


class StepBook:
    """The steps of one run while a driver carries it: recorded as they change, told to `listener`."""

    def __init__(self, records: Records, listener: RunListener | None):
        self.records = records
        self.listener = listener
        self.run: dict | None = None  # the run as its client sees it, last seen
        self.open_calls: dict | None = None  # the tool_calls step whose outputs are not all known
        self.replies: dict[str, dict] = {}  # message ID -> its message_creation step
        self.call_ids: set[str] = set()  # the calls already in a step of this book
        self.fresh = False  # a run started by this book's driver: no step of it is recorded elsewhere

    def _save(self, step: dict) -> dict:
        self.records.save_step(step)
        return step

    def _begin(self, step: dict) -> dict:
        if self.listener is None and step["type"] == "message_creation":
            # Nobody hears of it now: it is saved when it ends, with the run's end (one transaction
            # fewer while a reply streams in), or by `save_open` when the run waits for its client.
            return step
        self._save(step)
        if self.listener is not None:
            # A tool_calls step begins empty; its calls follow as a delta (which the SDKs add to it).
            empty = {"type": "tool_calls", "tool_calls": []} if step["type"] == "tool_calls" else step["step_details"]
            self.listener.step_created(dict(step, step_details=empty))
        return step

    def _end(self, step: dict, status: str, **kwargs) -> dict:
        step = self._save(ended_step(step, status, **kwargs))
        if self.listener is not None:
            self.listener.step_changed(step)
        return step

    def calls_made(self, calls: list[dict], answered: bool = False) -> None:
        """`calls` (tool calls in the step shape) were made: a `tool_calls` step, which ends now
        when `answered` (tools the upstream ran itself), else when their outputs are known. Calls
        already in a step are left out."""
        calls = [c for c in calls if c["id"] not in self.call_ids]
        if not calls:
            return
        self.call_ids.update(c["id"] for c in calls)
        pending = [dict(c, function=dict(c["function"], output=None)) if c["type"] == "function" else c for c in calls]
        step = self._begin(new_step(self.run, "tool_calls", {"type": "tool_calls", "tool_calls": pending}))
        if self.listener is not None:
            delta = [dict(call, index=i) for i, call in enumerate(pending)]
            self.listener.step_delta(step["id"], {"type": "tool_calls", "tool_calls": delta})
        if answered:
            self._end(dict(step, step_details=dict(step["step_details"], tool_calls=calls)), "completed")
        else:
            self.open_calls = self._save(step)

    def outputs_known(
        self, run_id: str, outputs: dict[str, str], usage: dict | None = None, final: bool = True
    ) -> None:
        """Outputs of the open step's function calls; with `final` every output is in, and the step
        ends with its round's `usage`."""
        step = self.open_calls or self._last_open_calls(run_id)
        if step is None:
            return
        calls = []
        for call in step["step_details"]["tool_calls"]:
            if call["type"] == "function" and call["id"] in outputs:
                call = dict(call, function=dict(call["function"], output=outputs[call["id"]]))
            calls.append(call)
        step = dict(step, step_details=dict(step["step_details"], tool_calls=calls))
        if final:
            self._end(step, "completed", usage=usage)
            self.open_calls = None
        else:
            self.open_calls = self._save(step)

    def _last_open_calls(self, run_id: str) -> dict | None:
        """The run's unfinished tool_calls step in the record (the run may have waited in another process)."""
        if self.fresh:
            return None
        newest = self.records.newest_step(run_id)
        if newest and newest["type"] == "tool_calls" and newest["status"] == "in_progress":
            return newest
        return None

    def reply_started(self, message_id: str) -> None:
        """An assistant message of the run is being written: its `message_creation` step."""
        if message_id not in self.replies:
            self.replies[message_id] = self._begin(new_step(self.run, "message_creation", {"message_id": message_id}))

    def save_open(self) -> None:
        """Record the replies still being written as they are (the run goes on in another request)."""
        for step in self.replies.values():
            if step["status"] == "in_progress":
                self._save(step)

    def reply_done(self, message_id: str, usage: dict | None) -> None:
        """The message is complete: so is its step, with the usage of the round that wrote it."""
        self.reply_started(message_id)
        step = self.replies[message_id]
        if step["status"] == "in_progress":
            self.replies[message_id] = self._end(step, "completed", usage=usage)

    def run_ended(self, run: dict) -> None:
        """The run's unfinished steps end as the run did."""
        if run["status"] in ACTIVE_STATUSES:
            return
        status = END_OF_OPEN_STEP.get(run["status"], "completed")
        open_steps = [s for s in self.replies.values() if s["status"] == "in_progress"]
        last_calls = self.open_calls or self._last_open_calls(run["id"])
        if last_calls is not None:
            open_steps.append(last_calls)
        for step in open_steps:
            self._end(step, status, last_error=run.get("last_error"))
        self.open_calls = None

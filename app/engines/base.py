"""The interface every upstream engine offers (its errors are those of `app.contract`).

Engines speak to one upstream API and return plain dicts in the Assistants v2
shapes of the contract (`thread`, `thread.message`, `thread.run`, `list`).
They know nothing of Flask, users or the database. While they follow a run's
upstream events they tell a listener neutral facts (app/runs/events.py), never
Assistants stream event names.
"""

from __future__ import annotations

from typing import Protocol

from app.assistant_types import AssistantType
from app.contract import MessagePage, Poll, StartedRun
from app.run_options import RunOptions
from app.tools import Tool


class Engine(Protocol):
    """What the views and the waiter need from an upstream."""

    name: str
    # False when the upstream's message lists lack creation times and runs, and
    # can't be listed `before` a message or by run: the backend's record fills in.
    full_message_lists: bool
    # True when the run's creation adds its `additional_messages` to the thread; False when the
    # service adds them first.
    additional_messages_in_run: bool

    def create_thread(self, messages: list[dict], metadata: dict | None) -> tuple[dict, list[dict]]:
        """The new thread, and its first messages where the upstream tells them."""
        ...

    def get_thread(self, thread_id: str) -> dict: ...

    def delete_thread(self, thread_id: str) -> dict: ...

    def add_message(
        self, thread_id: str, role: str, text: str, metadata: dict | None, attachments: list[dict] | None = None
    ) -> dict:
        """Add a message; `attachments` are passed to upstreams that take them (assistants engine)."""
        ...

    def list_messages(self, thread_id: str, page: MessagePage) -> dict: ...

    def start_run(
        self,
        thread_id: str,
        assistant: AssistantType,
        temperature: float | None,
        top_p: float | None,
        *,
        timeout: float,
        follow: bool = False,
        tools: tuple[Tool, ...] = (),
        options: RunOptions | None = None,
    ) -> StartedRun:
        """Create a run in one attempt of at most `timeout` seconds, never retried:
        an error whose `maybe_sent` is true leaves it unknown whether the run exists.
        With `follow`, the run's upstream events are read from the creation's own answer
        where the upstream allows it (`StartedRun.follow`). `tools` are the function tools
        the model may call; `options` the run's own settings (app/run_options.py). The responses engine
        also takes `file_search` (app.contract.FileSearch), given only to a run that searches
        (`RunPlan.knowledge`), here and in `submit_tool_outputs`."""
        ...

    def submit_tool_outputs(
        self,
        thread_id: str,
        run: dict,
        outputs: list[tuple[str, str]],
        assistant: AssistantType,
        temperature: float | None,
        top_p: float | None,
        *,
        timeout: float,
        follow: bool = False,
        tools: tuple[Tool, ...] = (),
        options: RunOptions | None = None,
    ) -> StartedRun:
        """Answer every call of a run in `requires_action` with (call ID, output) and let it go
        on, in one attempt like `start_run`; the run that goes on may have another ID."""
        ...

    def get_run(self, thread_id: str, run_id: str, timeout: float | None = None) -> Poll: ...

    def cancel_run(self, thread_id: str, run_id: str, timeout: float | None = None) -> dict: ...

    def newest_run(self, thread_id: str, timeout: float) -> tuple[bool, dict | None]:
        """(whether the upstream can tell, the thread's newest run or None): the look after a
        create that may have reached the upstream. (False, None) where the upstream API lists
        no runs of a thread."""
        ...

    def close_open_calls(self, thread_id: str, run: dict, timeout: float) -> bool:
        """Leave the thread usable after a run stopped for function calls; False when
        the run must be cancelled for that instead."""
        ...

    # changes to threads and single messages

    def update_thread(self, thread_id: str, metadata: dict) -> dict:
        """The thread after its metadata was set upstream."""
        ...

    def get_message(self, thread_id: str, message_id: str) -> dict:
        """One message of the thread (UpstreamNotFound when the thread has no such message)."""
        ...

    def update_message(self, thread_id: str, message_id: str, metadata: dict) -> dict:
        """The message with its new metadata: set upstream where the upstream can keep it;
        otherwise only checked to exist there, and the caller records the metadata."""
        ...

    def delete_message(self, thread_id: str, message_id: str) -> dict:
        """Delete the message upstream: `{id, object: "thread.message.deleted", deleted: true}`."""
        ...

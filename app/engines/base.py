"""The interface every upstream engine offers (its errors are those of `app.contract`).

Engines speak to one upstream API and return plain dicts in the Assistants v2
shapes of the contract (`thread`, `thread.message`, `thread.run`, `list`).
They know nothing of Flask, users or the database.
"""

from __future__ import annotations

from typing import Protocol

from app.assistant_types import AssistantType
from app.contract import MessagePage, Poll


class Engine(Protocol):
    """What the views and the waiter need from an upstream."""

    name: str
    # False when the upstream's message lists lack creation times and runs, and
    # can't be listed `before` a message or by run: the backend's record fills in.
    full_message_lists: bool

    def create_thread(self, messages: list[dict], metadata: dict | None) -> tuple[dict, list[dict]]:
        """The new thread, and its first messages where the upstream tells them."""
        ...

    def get_thread(self, thread_id: str) -> dict: ...

    def delete_thread(self, thread_id: str) -> dict: ...

    def add_message(self, thread_id: str, role: str, text: str, metadata: dict | None) -> dict: ...

    def list_messages(self, thread_id: str, page: MessagePage) -> dict: ...

    def create_run(
        self, thread_id: str, assistant: AssistantType, temperature: float | None, top_p: float | None
    ) -> dict: ...

    def get_run(self, thread_id: str, run_id: str) -> Poll: ...

    def watch_run(self, thread_id: str, run_id: str, timeout: float) -> Poll | None:
        """Block until the run ends, without polling; None when the upstream can't say."""
        ...

    def cancel_run(self, thread_id: str, run_id: str) -> dict: ...

"""The interface every upstream engine offers, and the errors it may raise.

Engines speak to one upstream API and return plain dicts in the Assistants v2
shapes of the contract (`thread`, `thread.message`, `thread.run`, `list`).
They know nothing of Flask, users or the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class UpstreamError(Exception):
    """An upstream call failed; subclasses say how the caller should react."""

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class UpstreamTransient(UpstreamError):
    """Timeout, connection error, 429 or 5xx: worth trying again later."""


class UpstreamConfigError(UpstreamError):
    """The upstream rejected our key or configuration (401, 403, unknown assistant)."""


class UpstreamNotFound(UpstreamError):
    """The thread, message or run does not exist upstream."""


class UpstreamBusy(UpstreamError):
    """The thread already has an active run (Assistants 400, `conversation_locked`)."""


class UpstreamRejected(UpstreamError):
    """Any other 4xx: the upstream refused the request as made."""


@dataclass(frozen=True)
class Poll:
    """One look at a run: its contract-shaped dict, the upstream's pacing hint, and
    the messages it produced when the engine learns them with the run itself."""

    run: dict
    poll_after_ms: int | None = None
    messages: tuple = ()


@dataclass(frozen=True)
class StartedRun:
    """A run just created: its first snapshot and, when its creation opened an event
    stream, `watch(timeout)` that reads on until the run ends (None when it cannot tell) and
    `close()` that lets it go."""

    run: dict
    watch: Callable[[float], Poll | None] | None = None
    close: Callable[[], None] = lambda: None


def maybe_sent(exc: UpstreamError) -> bool:
    """Whether the failed request may have reached the upstream (see upstream_http)."""
    return getattr(exc, "maybe_sent", True)


@dataclass(frozen=True)
class MessagePage:
    """Arguments of a message list, already validated."""

    limit: int = 20
    order: str = "desc"
    after: str | None = None
    before: str | None = None
    run_id: str | None = None


def list_page(data: list[dict], has_more: bool) -> dict:
    """A list answer in the Assistants shape, its cursors taken from the data."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


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

    def create_run(self, thread_id: str, assistant, temperature: float | None, top_p: float | None) -> dict: ...

    def start_run(
        self, thread_id: str, assistant, temperature, top_p, *, timeout: float, stream: bool = False
    ) -> StartedRun:
        """Create a run in one attempt of at most `timeout` seconds, never retried:
        an error whose `maybe_sent` is true leaves it unknown whether the run exists.
        With `stream`, the run's events are read from the creation's own answer where
        the upstream allows it."""
        ...

    def get_run(self, thread_id: str, run_id: str, timeout: float | None = None) -> Poll: ...

    def cancel_run(self, thread_id: str, run_id: str, timeout: float | None = None) -> dict: ...

    def close_open_calls(self, thread_id: str, run: dict, timeout: float) -> bool:
        """Leave the thread usable after a run stopped for function calls; False when
        the run must be cancelled for that instead."""
        ...

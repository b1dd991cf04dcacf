"""The shapes and statuses that the engines, the record, the waiter and the views share.

Engines translate upstream objects into these once, at their boundary; nothing
here knows of Flask, HTTP answers or the database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.runs.events import RunListener

# A run in one of these has not ended yet.
ACTIVE_STATUSES = frozenset({"queued", "in_progress", "cancelling"})


class UpstreamError(Exception):
    """An upstream call failed; subclasses say how the caller should react."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        maybe_sent: bool = True,
        param: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        # False only when the upstream surely did not act on the request: never sent,
        # or refused with a 4xx. A create that failed with maybe_sent must not be sent again.
        self.maybe_sent = maybe_sent
        self.param = param  # the request field the upstream named, if any


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
    # The upstream run's tool calls in the run-step shape (app/runs/steps.py), when the engine
    # reads them from its output; otherwise the steps are built from the run's required_action.
    step_calls: tuple = ()


@dataclass(frozen=True)
class FileSearch:
    """The file_search a run's responses carry (responses engine): the stores it searches (the
    type's, then the thread's), its `max_num_results` (None: the upstream's default), and whether
    the upstream should answer the results with their text."""

    vector_store_ids: tuple[str, ...]
    max_num_results: int | None = None
    include_results: bool = False


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


# follow(timeout, listener): reads the upstream event stream of a run until it ends (None
# when it cannot tell within `timeout`), telling `listener` (app/runs/events.py) what it reads.
Follow = Callable[[float, "RunListener | None"], "Poll | None"]


@dataclass(frozen=True)
class StartedRun:
    """A run just created: its first snapshot and, when its creation opened an upstream
    event stream, `follow` that reads on until the run ends, and `close()` that lets it go."""

    run: dict
    follow: Follow | None = None
    close: Callable[[], None] = lambda: None

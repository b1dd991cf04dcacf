"""What a run tells while it goes on: the neutral facts a listener hears (no event names, no HTTP).

The engines tell what they read on the upstream event stream (a new status, text
appended to a message), the wait tells the statuses its looks find, and the driver
tells the run's creation and its end. The API layer's `RunEvents` (app/api/sse.py)
turns these facts into Assistants stream events.

A new kind of fact (a citation, a run step, an event ID) is one new method here, told
where it is learned (an engine or the driver), passed on by the driver's `_ClientView`,
and written out by `RunEvents` in app/api/sse.py.
"""

from __future__ import annotations

from typing import Protocol


class RunListener(Protocol):
    """Hears one run's progress, each run already shown as the client's one run
    (except in the engines, whose runs the driver presents before passing them on).

    A listener whose `hears_text` is False (the driver's, when no client reads the reply as
    it comes) lets an engine skip the text and citation events it would otherwise tell;
    one without the attribute hears them."""

    def created(self, run: dict) -> None:
        """The run exists upstream: its first snapshot."""

    def status_changed(self, run: dict) -> None:
        """The run as seen with a (maybe) new status; its end too."""

    def text_appended(self, message_id: str, index: int, text: str) -> None:
        """`text` was added to content part `index` of the assistant message `message_id`."""

    def citation_added(self, message_id: str, index: int, text: str, annotation: dict) -> None:
        """`text` (a citation's marker) was added to content part `index` of `message_id`, cited by
        `annotation` (an Assistants `file_citation` whose indices frame it in the part's text)."""

    def message_completed(self, message: dict) -> None:
        """An assistant message is complete (or `incomplete`, as its status says)."""

    def tool_calls_made(self, calls: list[dict]) -> None:
        """Tool calls the upstream ran itself (file_search), in the run-step shape, once done; the
        driver makes them a step (`step_created` ...), so a streamed answer never hears this one."""

    def step_created(self, step: dict) -> None:
        """A run step (app/runs/steps.py) has begun: its first snapshot, `in_progress`."""

    def step_delta(self, step_id: str, step_details: dict) -> None:
        """What step `step_id` adds to its `step_details` (tool calls carry their `index`)."""

    def step_changed(self, step: dict) -> None:
        """The step as it is now: ended (`completed`, `failed`, `cancelled`, `expired`)."""

"""The contract's run-status table: what each way a wait ends means in HTTP.

Read by the runs view, the docs and the tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.runs.polling import WaitResult


@dataclass(frozen=True)
class Outcome:
    """The HTTP answer to one way a wait can end; `error` is None on success."""

    http_status: int
    error: str | None


FINAL_STATUS_OUTCOMES = {
    "completed": Outcome(200, None),
    "incomplete": Outcome(200, None),
    "requires_action": Outcome(400, "Run requires action (function calling not implemented)"),
    "failed": Outcome(500, "Run failed: {reason}"),
    "expired": Outcome(410, "Run expired"),
    "cancelled": Outcome(400, "Run was cancelled"),
}
# A run that stopped for calls of tools its client declared: the client answers them.
CLIENT_ACTION_OUTCOME = Outcome(200, None)
TIMEOUT_OUTCOME = Outcome(408, "Run timeout exceeded {seconds} seconds")
UNEXPECTED_OUTCOME = Outcome(500, "Run ended with unexpected status: {status}")


def outcome_of(result: WaitResult, timeout: float) -> tuple[Outcome, str | None]:
    """The table row for a finished wait and its filled-in error message."""
    if result.timed_out:
        return TIMEOUT_OUTCOME, TIMEOUT_OUTCOME.error.format(seconds=f"{timeout:g}")
    if result.awaits_client:
        return CLIENT_ACTION_OUTCOME, None
    status = result.run["status"]
    outcome = FINAL_STATUS_OUTCOMES.get(status)
    if outcome is None:
        return UNEXPECTED_OUTCOME, UNEXPECTED_OUTCOME.error.format(status=status)
    if outcome.error is None:
        return outcome, None
    reason = (result.run.get("last_error") or {}).get("message") or "Unknown error"
    return outcome, outcome.error.format(reason=reason)

"""A run's plan: what it carries from one upstream round to the next, and the run as its client sees it.

A run that calls tools may take several upstream runs (on the responses engine each
round is a new background response). The client sees one run: the first upstream
run's ID and creation time, the usage of every round added up, the tools it declared,
and only the calls it must answer itself.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from app import run_options
from app.assistant_types import AssistantType, lookup
from app.contract import FileSearch
from app.errors import ApiError
from app.tools import Tool

USAGE_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


@dataclass
class RunPlan:
    """A run's request, and what its rounds so far have added."""

    thread_id: str
    owner: str
    assistant: AssistantType
    temperature: float | None
    top_p: float | None
    client_tools: tuple[Tool, ...] = ()
    run_id: str | None = None  # the first upstream run's ID: the one the client sees
    created_at: int | None = None
    rounds: int = 0  # model turns so far
    usage: dict | None = None  # of the rounds before the current one
    options: run_options.RunOptions = field(default_factory=run_options.RunOptions)  # the run's own settings
    started_at: int | None = None  # when a look or event first saw the run started upstream
    file_search: FileSearch | None = None  # responses engine: the stores every round searches

    @property
    def tools(self) -> tuple[Tool, ...]:
        return self.assistant.tools + self.client_tools

    def knowledge(self) -> dict:
        """The engine's keyword arguments for the run's file_search, if it has one."""
        return {"file_search": self.file_search} if self.file_search is not None else {}

    def pending(self, run: dict, server_outputs: dict[str, str], expires_at: float) -> dict:
        """What the run needs to go on once the client's outputs come, maybe in another process."""
        return {
            "owner": self.owner,
            "assistant_type": self.assistant.name,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "client_tools": [tool.declaration() for tool in self.client_tools],
            "run_id": self.run_id,
            "created_at": self.created_at,
            "rounds": self.rounds,
            "usage": self.usage,
            "options": run_options.to_record(self.options),
            "started_at": self.started_at,
            "run": run,
            "server_outputs": server_outputs,
            "expires_at": expires_at,
            "file_search": asdict(self.file_search) if self.file_search is not None else None,
        }

    @classmethod
    def resumed(cls, pending: dict, types: tuple[AssistantType, ...], thread_id: str) -> RunPlan:
        """The plan of a run that waited for the client's outputs."""
        assistant = lookup(types, pending["assistant_type"])
        if assistant is None:
            raise ApiError(400, f"Assistant type '{pending['assistant_type']}' is no longer configured.")
        searched = pending.get("file_search")
        file_search = None
        if searched is not None:
            file_search = FileSearch(**dict(searched, vector_store_ids=tuple(searched["vector_store_ids"])))
        return cls(
            thread_id,
            pending["owner"],
            assistant,
            pending["temperature"],
            pending["top_p"],
            tuple(Tool(**declared) for declared in pending["client_tools"]),
            pending["run_id"],
            pending["created_at"],
            pending["rounds"],
            pending["usage"],
            run_options.from_record(pending.get("options")),
            pending.get("started_at"),
            file_search,
        )

    def present(self, upstream: dict, client_calls: list[dict] | None = None, expires_at=None) -> dict:
        """The upstream run as the client's one run: the view that leaves the driver
        (to the record, the answer and the listener), with the settings applied to it."""
        run = run_options.reported(self.options, dict(upstream, id=self.run_id, created_at=self.created_at))
        self.started_at = run["started_at"] = started_at(self.started_at, upstream)
        run["usage"] = added_usage(self.usage, upstream.get("usage"))
        if self.tools:
            run["tools"] = [{"type": "function", "function": tool.declaration()} for tool in self.tools]
        if self.file_search is not None:
            run["tools"] = [*run.get("tools", []), {"type": "file_search"}]
        if client_calls is not None:
            run["required_action"] = {
                "type": "submit_tool_outputs",
                "submit_tool_outputs": {"tool_calls": client_calls},
            }
            run["expires_at"] = int(expires_at)
        return run


def started_at(known: int | None, upstream: dict) -> int | None:
    """When the run started: as `known` (the first sight of it started), else as the upstream
    tells (the assistants engine), else now if `upstream` shows it started (the Responses API
    has no such time: the first look or event that sees the run past `queued` is it)."""
    if known is not None:
        return known
    if upstream.get("started_at") is not None:
        return int(upstream["started_at"])
    return None if upstream["status"] == "queued" else int(time.time())


def tool_calls(run: dict) -> list[dict]:
    """The calls of a run in `requires_action`, in the Assistants shape."""
    return ((run.get("required_action") or {}).get("submit_tool_outputs") or {}).get("tool_calls") or []


def added_usage(total: dict | None, more: dict | None) -> dict | None:
    if total is None or more is None:
        return more or total
    return {key: (total.get(key) or 0) + (more.get(key) or 0) for key in USAGE_KEYS}


def ended_as(run: dict, status: str, last_error: dict | None = None) -> dict:
    """The run ended by the backend itself, with `status`."""
    now = int(time.time())
    ended = dict(run, status=status, required_action=None)
    if status == "failed":
        ended.update(failed_at=now, last_error=last_error)
    elif status == "cancelled":
        ended["cancelled_at"] = now
    return ended


def too_many_rounds(rounds: int) -> dict:
    return {
        "code": "max_tool_rounds",
        "message": f"The model was still calling tools after {rounds} turns (TOOL_MAX_ROUNDS); the run was stopped.",
    }

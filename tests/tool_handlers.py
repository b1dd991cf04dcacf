"""Server tools for the tests: `ASSISTANT_CURATOR_TOOLS=tests.tool_handlers:add,...`."""

from __future__ import annotations

import threading
import time

from pydantic import BaseModel

calls: list[tuple[str, dict]] = []
# Two calls of `meet` in one turn pass it only when they run side by side.
meeting = threading.Barrier(2, timeout=3)


def add(a: int, b: int) -> int:
    """Add two integers.

    The rest of the docstring is not part of the description.
    """
    calls.append(("add", {"a": a, "b": b}))
    return a + b


def meet(name: str) -> str:
    """Wait for the other call of this tool in the same turn."""
    meeting.wait()
    return f"met {name}"


def explode(reason: str) -> str:
    """Always fails."""
    raise RuntimeError(f"exploded: {reason}")


def sleep_for(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "rested"


class Address(BaseModel):
    city: str
    street: str | None = None


def locate(address: Address, zoom: int = 3) -> dict:
    """A nested model and a default: not strict."""
    return {"city": address.city, "zoom": zoom}


def no_hints(a):
    return a


def reset() -> None:
    global meeting
    calls.clear()
    meeting = threading.Barrier(2, timeout=3)

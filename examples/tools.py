"""Example server tools: the offline development server gives them to the `curator` type.

Configure them with
    ASSISTANT_CURATOR_TOOLS=examples.tools:current_time,examples.tools:convert_temperature

Each function is one tool. The model sees its name, the first paragraph of its
docstring, and a JSON schema of its parameters made from the type hints. The backend
checks the model's arguments against that schema before calling; what the function
returns (a string, or anything JSON can carry) is what the model reads back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from zoneinfo import ZoneInfo


def current_time(timezone: str) -> str:
    """The current date and time in an IANA time zone, such as Europe/Paris.

    An unknown zone raises ZoneInfoNotFoundError; the model then reads the error
    instead of a time, and can say so or try again.
    """
    return datetime.now(ZoneInfo(timezone)).isoformat(timespec="seconds")


def convert_temperature(value: float, to: Literal["celsius", "fahrenheit"]) -> dict:
    """Convert a temperature to Celsius (from Fahrenheit) or to Fahrenheit (from Celsius)."""
    if to == "celsius":
        return {"celsius": round((value - 32) * 5 / 9, 2)}
    return {"fahrenheit": round(value * 9 / 5 + 32, 2)}

"""Request parsing: every check that must pass before anything reaches the upstream."""

from __future__ import annotations

import re

from flask import request

from app.contract import MessagePage
from app.errors import bad_request

ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512


def checked_id(value: str, kind: str) -> str:
    """The ID, if it is safe to put in an upstream URL."""
    if not ID_PATTERN.match(value):
        raise bad_request(f"Invalid {kind} ID: expected 1-128 characters of A-Z, a-z, 0-9, '_' or '-'.")
    return value


def json_body(allowed: set[str], *, optional: bool = False) -> dict:
    """The request's JSON object, refusing fields this route does not take."""
    if optional and not request.get_data(cache=True):
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object (Content-Type: application/json).")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(f"Unknown field(s): {', '.join(unknown)}. This route takes: {', '.join(sorted(allowed))}.")
    return body


def message_text(content, max_chars: int) -> str:
    """The text of a message's content: a string, or a list of text parts."""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise bad_request('\'content\' parts must be {"type": "text", "text": string}.')
            parts.append(part["text"])
        content = "\n".join(parts)
    if not isinstance(content, str):
        raise bad_request("'content' must be a string or a list of text parts.")
    if not content.strip():
        raise bad_request("'content' must not be empty.")
    if len(content) > max_chars:
        raise bad_request(f"'content' is too long: {len(content)} characters, at most {max_chars}.")
    return content


def role(value) -> str:
    if value not in ("user", "assistant"):
        raise bad_request("'role' must be 'user' or 'assistant'.")
    return value


def metadata(value, max_pairs: int) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > max_pairs:
        raise bad_request(f"'metadata' must be an object of at most {max_pairs} string pairs.")
    for key, item in value.items():
        if len(key) > METADATA_KEY_CHARS or not isinstance(item, str) or len(item) > METADATA_VALUE_CHARS:
            raise bad_request(
                f"'metadata' keys are at most {METADATA_KEY_CHARS} characters and values strings of at most "
                f"{METADATA_VALUE_CHARS}."
            )
    return value


def number_in_range(body: dict, name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise bad_request(f"'{name}' must be a number from {low:g} to {high:g}.")
    return float(value)


def message_page() -> MessagePage:
    """The list arguments of `GET .../messages`."""
    args = request.args
    unknown = sorted(set(args) - {"limit", "order", "after", "before", "run_id"})
    if unknown:
        raise bad_request(f"Unknown query parameter(s): {', '.join(unknown)}.")
    raw_limit = args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise bad_request("'limit' must be a whole number from 1 to 100.")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'.")
    cursors = {name: checked_id(args[name], name) if name in args else None for name in ("after", "before", "run_id")}
    return MessagePage(limit=int(raw_limit), order=order, **cursors)


def list_page(extra: tuple[str, ...] = ()) -> MessagePage:
    """The list arguments of `GET .../runs` and `.../steps`: limit, order, after, before (and `extra`)."""
    args = request.args
    unknown = sorted(set(args) - {"limit", "order", "after", "before", *extra})
    if unknown:
        raise bad_request(f"Unknown query parameter(s): {', '.join(unknown)}.")
    raw_limit = args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise bad_request("'limit' must be a whole number from 1 to 100.")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'.")
    cursors = {name: checked_id(args[name], name) if name in args else None for name in ("after", "before")}
    return MessagePage(limit=int(raw_limit), order=order, **cursors)


def step_include(allowed: tuple[str, ...]) -> tuple[str, ...]:
    """`include[]` of a run-step read: what it may add to the steps."""
    include = tuple(request.args.getlist("include[]"))
    for value in include:
        if value not in allowed:
            raise bad_request(f"'include[]' may only be: {', '.join(allowed)}.")
    return include


def stream_flag(body: dict) -> bool:
    """`stream`: true for an answer of Assistants stream events."""
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise bad_request("'stream' must be true or false.")
    return bool(stream)


def tool_outputs(value, max_outputs: int = 128) -> list[dict]:
    """`tool_outputs` of a submit: [{"tool_call_id": string, "output": string}, ...]."""
    if not isinstance(value, list) or not value:
        raise bad_request('\'tool_outputs\' must be a non-empty array of {"tool_call_id", "output"}.')
    if len(value) > max_outputs:
        raise bad_request(f"'tool_outputs' may hold at most {max_outputs} outputs.")
    for index, item in enumerate(value):
        if not isinstance(item, dict) or set(item) - {"tool_call_id", "output"}:
            raise bad_request(f"'tool_outputs[{index}]' must be an object with 'tool_call_id' and 'output'.")
        if not isinstance(item.get("tool_call_id"), str) or not item["tool_call_id"]:
            raise bad_request(f"'tool_outputs[{index}].tool_call_id' must be a non-empty string.")
        if not isinstance(item.get("output"), str):
            raise bad_request(f"'tool_outputs[{index}].output' must be a string.")
    return value

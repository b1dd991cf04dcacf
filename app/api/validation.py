"""Request parsing: every check that must pass before anything reaches the upstream."""

from __future__ import annotations

import json
import re

from flask import request
from werkzeug.exceptions import HTTPException

from app.contract import MessagePage
from app.errors import bad_request

# Matched whole (fullmatch): with `$`, an ID with a trailing newline would pass.
ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")
LIMIT_PATTERN = re.compile(r"[0-9]{1,3}")
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512
# Deeper JSON is refused before it is parsed (the parser recurses once per level).
MAX_JSON_DEPTH = 64
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def checked_id(value: str, kind: str) -> str:
    """The ID, if it is safe to put in an upstream URL."""
    if not ID_PATTERN.fullmatch(value):
        raise bad_request(f"Invalid {kind} ID: expected 1-128 characters of A-Z, a-z, 0-9, '_' or '-'.")
    return value


def complete_body() -> None:
    """Read the body now, and refuse one shorter than its Content-Length (a client that gave up
    half-way) or one that cannot be read, before any check or work (an app `before_request` hook)."""
    expected = request.content_length
    if not expected and request.headers.get("Transfer-Encoding") is None:
        return
    if request.mimetype == "multipart/form-data":
        return  # an upload is read as it streams in, against its own limit, by the files view
    try:
        data = request.get_data(cache=True)
    except HTTPException:
        raise
    except Exception:  # the server's own: a chunked body cut short, a reset connection
        raise bad_request("The request body could not be read to its end.") from None
    if expected is not None and len(data) != expected:
        raise bad_request(f"The request body is shorter than its Content-Length: {len(data)} of {expected} bytes.")


def too_deep(text: str, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the JSON text nests arrays and objects more than `limit` levels (strings ignored)."""
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub("", text)):
        depth += 1 if bracket in "[{" else -1
        if depth > limit:
            return True
    return False


def _encodable(value) -> bool:
    """Whether every string in the parsed JSON can be written as UTF-8 (no lone surrogates)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


def parsed_json():
    """The request body parsed as JSON, its depth bounded before parsing and its text checked after."""
    if not request.is_json:
        raise bad_request("Request body must be a JSON object (Content-Type: application/json).")
    try:
        text = request.get_data(cache=True).decode("utf-8")
    except UnicodeDecodeError:
        raise bad_request("Request body is not valid UTF-8.") from None
    if too_deep(text):
        raise bad_request(f"Request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep.")
    try:
        value = json.loads(text)
    except ValueError:
        raise bad_request("Request body is not valid JSON.") from None
    except RecursionError:  # a backstop: too_deep refuses what could get here
        raise bad_request(f"Request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep.") from None
    if not _encodable(value):
        raise bad_request("Request body holds text that is not valid Unicode (a lone surrogate such as \\ud800).")
    return value


def json_body(allowed: set[str], *, optional: bool = False) -> dict:
    """The request's JSON object, refusing fields this route does not take."""
    if optional and not request.get_data(cache=True):
        return {}
    body = parsed_json()
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
    for name in args:
        if len(args.getlist(name)) > 1:
            raise bad_request(f"Query parameter '{name}' is given more than once.")
    raw_limit = args.get("limit", "20")
    if not LIMIT_PATTERN.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= 100:
        raise bad_request("'limit' must be a whole number from 1 to 100 (ASCII digits only).")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'.")
    cursors = {name: _query_id(args[name], name) if name in args else None for name in ("after", "before", "run_id")}
    return MessagePage(limit=int(raw_limit), order=order, **cursors)


def _query_id(value: str, name: str) -> str:
    """A query parameter that names an object: an ID, matched whole."""
    if not ID_PATTERN.fullmatch(value):
        raise bad_request(
            f"Invalid '{name}' query parameter: expected an ID of 1-128 characters of A-Z, a-z, 0-9, '_' or '-'."
        )
    return value


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

"""Checks of file and vector store requests, with OpenAI's documented limits, before anything goes upstream."""

from __future__ import annotations

from flask import request

from app.api import validation as v
from app.errors import bad_request

# Upload purposes the backend takes: those file_search and attachments use.
FILE_PURPOSES = ("assistants",)
MAX_CREATE_FILE_IDS = 500  # POST /vector_stores `file_ids`
MAX_ATTRIBUTES = 16  # a vector store file's `attributes`
VECTOR_STORE_FILE_FILTERS = ("in_progress", "completed", "failed", "cancelled")


def purpose(value) -> str:
    if value is None or value == "":
        raise bad_request("'purpose' is required: a multipart field, e.g. purpose=assistants.")
    if value not in FILE_PURPOSES:
        raise bad_request(f"Unsupported 'purpose' {value!r}: this backend takes {', '.join(FILE_PURPOSES)}.")
    return value


def list_args(allowed: set[str], *, max_limit: int, default_limit: int) -> dict:
    """`limit`, `order`, `after`, `before` (and whatever else `allowed` names) of a list route."""
    args = request.args
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise bad_request(f"Unknown query parameter(s): {', '.join(unknown)}.")
    raw_limit = args.get("limit", str(default_limit))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= max_limit:
        raise bad_request(f"'limit' must be a whole number from 1 to {max_limit}.")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("'order' must be 'asc' or 'desc'.")
    page = {"limit": int(raw_limit), "order": order}
    for cursor in ("after", "before"):
        if cursor in allowed:
            page[cursor] = v.checked_id(args[cursor], cursor) if cursor in args else None
    return page


def file_ids(value, *, limit: int = MAX_CREATE_FILE_IDS) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise bad_request("'file_ids' must be a list of file IDs.")
    if len(value) > limit:
        raise bad_request(f"'file_ids' may hold at most {limit} files (OpenAI's limit); got {len(value)}.")
    return [v.checked_id(i, "file") for i in value]


def chunking_strategy(value) -> None:
    """`{"type": "auto"}` or `{"type": "static", "static": {max_chunk_size_tokens 100-4096, chunk_overlap_tokens}}`."""
    if value is None:
        return
    if not isinstance(value, dict) or value.get("type") not in ("auto", "static"):
        raise bad_request('\'chunking_strategy\' must be {"type": "auto"} or {"type": "static", "static": {...}}.')
    if value["type"] == "auto":
        if set(value) != {"type"}:
            raise bad_request("'chunking_strategy' of type 'auto' takes no other field.")
        return
    static = value.get("static")
    if set(value) != {"type", "static"} or not isinstance(static, dict):
        raise bad_request("'chunking_strategy.static' is required for type 'static'.")
    size, overlap = static.get("max_chunk_size_tokens"), static.get("chunk_overlap_tokens")
    if set(static) != {"max_chunk_size_tokens", "chunk_overlap_tokens"} or not all(
        isinstance(n, int) and not isinstance(n, bool) for n in (size, overlap)
    ):
        raise bad_request("'chunking_strategy.static' takes whole numbers max_chunk_size_tokens, chunk_overlap_tokens.")
    if not 100 <= size <= 4096:
        raise bad_request("'chunking_strategy.static.max_chunk_size_tokens' must be from 100 to 4096.")
    if not 0 <= overlap <= size // 2:
        raise bad_request(
            "'chunking_strategy.static.chunk_overlap_tokens' must be from 0 to half of max_chunk_size_tokens."
        )


def expires_after(value) -> None:
    if value is None:
        return
    days = value.get("days") if isinstance(value, dict) else None
    if (
        not isinstance(value, dict)
        or set(value) != {"anchor", "days"}
        or value["anchor"] != "last_active_at"
        or not isinstance(days, int)
        or isinstance(days, bool)
        or not 1 <= days <= 365
    ):
        raise bad_request('\'expires_after\' must be {"anchor": "last_active_at", "days": 1-365}.')


def optional_text(body: dict, name: str, max_chars: int) -> None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or len(value) > max_chars):
        raise bad_request(f"'{name}' must be a string of at most {max_chars} characters.")


def attributes(value) -> None:
    """At most 16 pairs; keys up to 64 characters; values strings (up to 512), numbers or booleans."""
    if value is None:
        return
    if not isinstance(value, dict) or len(value) > MAX_ATTRIBUTES:
        raise bad_request(f"'attributes' must be an object of at most {MAX_ATTRIBUTES} pairs.")
    for key, item in value.items():
        text_ok = isinstance(item, str) and len(item) <= v.METADATA_VALUE_CHARS
        if len(key) > v.METADATA_KEY_CHARS or not (text_ok or isinstance(item, (int, float, bool))):
            raise bad_request(
                f"'attributes' keys are at most {v.METADATA_KEY_CHARS} characters and values numbers, booleans or "
                f"strings of at most {v.METADATA_VALUE_CHARS}."
            )

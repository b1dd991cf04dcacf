"""Threads and their messages: `/threads`, `/threads/<id>`, `/threads/<id>/messages`."""

from __future__ import annotations

from flask import Blueprint, g, jsonify

from app import threads
from app.api import authenticate_caller, services
from app.api import validation as v
from app.api.idempotency import idempotent

bp = Blueprint("threads", __name__)
bp.before_request(authenticate_caller)


@bp.post("/threads")
def create_thread():
    s = services()
    body = v.json_body({"messages", "metadata"}, optional=True)
    messages, metadata = checked_thread(body, s.settings)
    return jsonify(threads.create(s, g.user, messages, metadata))


def checked_thread(body: dict, settings) -> tuple[list[dict], dict | None]:
    """The messages and metadata of a new thread (`POST .../threads`, `thread` of `.../threads/runs`), checked."""
    raw_messages = body.get("messages") or []
    if not isinstance(raw_messages, list) or len(raw_messages) > 32:
        raise v.bad_request("'messages' must be a list of at most 32 messages.")
    messages = []
    for raw in raw_messages:
        if not isinstance(raw, dict) or set(raw) - {"role", "content", "metadata"}:
            raise v.bad_request('Each message must be {"role", "content", "metadata"?}.')
        message = {
            "role": v.role(raw.get("role")),
            "content": v.message_text(raw.get("content"), settings.max_message_chars),
        }
        message_metadata = v.metadata(raw.get("metadata"), settings.max_metadata_pairs)
        if message_metadata:
            message["metadata"] = message_metadata
        messages.append(message)
    return messages, v.metadata(body.get("metadata"), settings.max_metadata_pairs)


@bp.get("/threads/<thread_id>")
def get_thread(thread_id):
    return jsonify(threads.retrieve(services(), g.user, v.checked_id(thread_id, "thread")))


@bp.delete("/threads/<thread_id>")
def delete_thread(thread_id):
    return jsonify(threads.delete(services(), g.user, v.checked_id(thread_id, "thread")))


@bp.post("/threads/<thread_id>/messages")
@idempotent
def add_message(thread_id):
    s = services()
    thread_id = v.checked_id(thread_id, "thread")
    body = v.json_body({"role", "content", "metadata", "attachments"})
    if body.get("attachments"):
        raise v.bad_request("Attachments are not supported by this backend.")
    message = threads.add_message(
        s,
        g.user,
        thread_id,
        v.role(body.get("role")),
        v.message_text(body.get("content"), s.settings.max_message_chars),
        v.metadata(body.get("metadata"), s.settings.max_metadata_pairs),
    )
    return jsonify(message)


@bp.get("/threads/<thread_id>/messages")
def list_messages(thread_id):
    thread_id = v.checked_id(thread_id, "thread")
    return jsonify(threads.list_messages(services(), g.user, thread_id, v.message_page()))

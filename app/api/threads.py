"""Threads and their messages: `/threads`, `/threads/<id>`, `/threads/<id>/messages`, `.../messages/<id>`."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from app import threads
from app.api import authenticate_caller, services
from app.api import validation as v
from app.api.idempotency import idempotent
from app.attachments import checked_attachments
from app.store.thread_records import ThreadPage

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
        if not isinstance(raw, dict) or set(raw) - {"role", "content", "metadata", "attachments"}:
            raise v.bad_request('Each message must be {"role", "content", "metadata"?, "attachments"?}.')
        message = {
            "role": v.role(raw.get("role")),
            "content": v.message_text(raw.get("content"), settings.max_message_chars),
        }
        message_metadata = v.metadata(raw.get("metadata"), settings.max_metadata_pairs)
        if message_metadata:
            message["metadata"] = message_metadata
        attachments = checked_attachments(raw.get("attachments"), settings.engine)
        if attachments:
            message["attachments"] = attachments
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
    message = threads.add_message(
        s,
        g.user,
        thread_id,
        v.role(body.get("role")),
        v.message_text(body.get("content"), s.settings.max_message_chars),
        v.metadata(body.get("metadata"), s.settings.max_metadata_pairs),
        checked_attachments(body.get("attachments"), s.engine.name),
    )
    return jsonify(message)


@bp.get("/threads/<thread_id>/messages")
def list_messages(thread_id):
    thread_id = v.checked_id(thread_id, "thread")
    return jsonify(threads.list_messages(services(), g.user, thread_id, v.message_page()))


# The thread list (an extension: the Assistants API had none), and changes to threads and single messages.


def _thread_page() -> ThreadPage:
    """The list arguments of `GET .../threads`."""
    args = request.args
    unknown = sorted(set(args) - {"limit", "order", "after", "before"})
    if unknown:
        raise v.bad_request(f"Unknown query parameter(s): {', '.join(unknown)}.")
    raw_limit = args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise v.bad_request("'limit' must be a whole number from 1 to 100.")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise v.bad_request("'order' must be 'asc' or 'desc'.")
    cursors = {name: v.checked_id(args[name], name) if name in args else None for name in ("after", "before")}
    return ThreadPage(limit=int(raw_limit), order=order, **cursors)


def _new_metadata() -> dict | None:
    """The `metadata` of a modify request, the only field it takes (None: leave it as it is)."""
    body = v.json_body({"metadata"}, optional=True)
    return v.metadata(body.get("metadata"), services().settings.max_metadata_pairs)


@bp.get("/threads")
def list_threads():
    return jsonify(threads.list_threads(services(), g.user, _thread_page()))


@bp.post("/threads/<thread_id>")
def update_thread(thread_id):
    thread_id = v.checked_id(thread_id, "thread")
    return jsonify(threads.update(services(), g.user, thread_id, _new_metadata()))


@bp.get("/threads/<thread_id>/messages/<message_id>")
def get_message(thread_id, message_id):
    ids = v.checked_id(thread_id, "thread"), v.checked_id(message_id, "message")
    return jsonify(threads.retrieve_message(services(), g.user, *ids))


@bp.post("/threads/<thread_id>/messages/<message_id>")
def update_message(thread_id, message_id):
    ids = v.checked_id(thread_id, "thread"), v.checked_id(message_id, "message")
    return jsonify(threads.update_message(services(), g.user, *ids, _new_metadata()))


@bp.delete("/threads/<thread_id>/messages/<message_id>")
def delete_message(thread_id, message_id):
    ids = v.checked_id(thread_id, "thread"), v.checked_id(message_id, "message")
    return jsonify(threads.delete_message(services(), g.user, *ids))

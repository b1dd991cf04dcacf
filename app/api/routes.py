"""The contract's routes, as a blueprint made once per prefix.

`/api/openai` takes the assistant type from the body; `/api/assistants/<type>`
fixes it by URL. Both share these views.
"""

from __future__ import annotations

import time

from flask import Blueprint, g, jsonify, request

from app import runs, threads
from app.api import validation as v
from app.api.idempotency import idempotent
from app.assistants import resolve
from app.auth import authenticate
from app.backend import backend
from app.errors import ApiError
from app.ratelimit import run_limit

RUN_FIELDS = {"assistant_type", "assistant_id", "temperature", "top_p", "stream", "metadata"}


def _no_room() -> ApiError:
    return ApiError(
        503, "This server has no room for another waiting run; try again shortly.", headers={"Retry-After": "1"}
    )


def make_blueprint(name: str, url_prefix: str, fixed_type: str | None = None) -> Blueprint:
    """The API routes under `url_prefix`; `fixed_type` pins the assistant type."""
    bp = Blueprint(name, __name__, url_prefix=url_prefix)

    @bp.before_request
    def note_arrival():
        g.arrived = time.monotonic()  # a run's deadline starts here

    @bp.before_request
    def who_is_calling():
        # A CORS preflight carries no credentials, and must get a 200; the rate
        # limiter may have authenticated the caller already.
        if request.method != "OPTIONS" and "user" not in g:
            authenticate(backend().settings)

    @bp.post("/threads")
    def create_thread():
        b = backend()
        body = v.json_body({"messages", "metadata"}, optional=True)
        raw_messages = body.get("messages") or []
        if not isinstance(raw_messages, list) or len(raw_messages) > 32:
            raise v.bad_request("'messages' must be a list of at most 32 messages.")
        messages = []
        for raw in raw_messages:
            if not isinstance(raw, dict) or set(raw) - {"role", "content", "metadata"}:
                raise v.bad_request('Each message must be {"role", "content", "metadata"?}.')
            message = {
                "role": v.role(raw.get("role")),
                "content": v.message_text(raw.get("content"), b.settings.max_message_chars),
            }
            message_metadata = v.metadata(raw.get("metadata"), b.settings.max_metadata_pairs)
            if message_metadata:
                message["metadata"] = message_metadata
            messages.append(message)
        metadata = v.metadata(body.get("metadata"), b.settings.max_metadata_pairs)
        return jsonify(threads.create(b, g.user, messages, metadata))

    @bp.get("/threads/<thread_id>")
    def get_thread(thread_id):
        return jsonify(threads.retrieve(backend(), g.user, v.checked_id(thread_id, "thread")))

    @bp.delete("/threads/<thread_id>")
    def delete_thread(thread_id):
        return jsonify(threads.delete(backend(), g.user, v.checked_id(thread_id, "thread")))

    @bp.post("/threads/<thread_id>/messages")
    @idempotent
    def add_message(thread_id):
        b = backend()
        thread_id = v.checked_id(thread_id, "thread")
        body = v.json_body({"role", "content", "metadata", "attachments"})
        if body.get("attachments"):
            raise v.bad_request("Attachments are not supported by this backend.")
        message = threads.add_message(
            b,
            g.user,
            thread_id,
            v.role(body.get("role")),
            v.message_text(body.get("content"), b.settings.max_message_chars),
            v.metadata(body.get("metadata"), b.settings.max_metadata_pairs),
        )
        return jsonify(message)

    @bp.get("/threads/<thread_id>/messages")
    def list_messages(thread_id):
        thread_id = v.checked_id(thread_id, "thread")
        return jsonify(threads.list_messages(backend(), g.user, thread_id, v.message_page()))

    @bp.post("/threads/<thread_id>/runs")
    @run_limit
    @idempotent
    def create_run(thread_id):
        b = backend()
        thread_id = v.checked_id(thread_id, "thread")
        body = v.json_body(RUN_FIELDS)
        if body.get("stream"):
            raise v.bad_request("'stream' is not supported: this backend answers when the run has ended.")
        v.metadata(body.get("metadata"), b.settings.max_metadata_pairs)
        assistant = resolve(
            b.settings.assistant_types, fixed_type, body.get("assistant_type"), body.get("assistant_id")
        )
        temperature = v.number_in_range(body, "temperature", 0, 2)
        top_p = v.number_in_range(body, "top_p", 0, 1)
        temperature = assistant.temperature if temperature is None else temperature
        top_p = assistant.top_p if top_p is None else top_p
        if not b.capacity.try_take():
            raise _no_room()
        try:
            status, answer, headers = runs.start_and_wait(
                b, g.user, thread_id, assistant, temperature, top_p, arrived=g.arrived
            )
        finally:
            b.capacity.give_back()
        response = jsonify(answer)
        response.status_code = status
        response.headers.update(headers)
        return response

    @bp.get("/threads/<thread_id>/runs/<run_id>")
    def get_run(thread_id, run_id):
        run, poll_after_ms = runs.retrieve(
            backend(), g.user, v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run")
        )
        response = jsonify(run)
        if poll_after_ms is not None:
            response.headers["openai-poll-after-ms"] = str(poll_after_ms)
        return response

    @bp.post("/threads/<thread_id>/runs/<run_id>/cancel")
    def cancel_run(thread_id, run_id):
        return jsonify(runs.cancel(backend(), g.user, v.checked_id(thread_id, "thread"), v.checked_id(run_id, "run")))

    return bp

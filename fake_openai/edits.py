"""Reading, changing and deleting single messages and items, and changing threads and conversations.

Assistants v2: `GET/POST/DELETE /v1/threads/{t}/messages/{m}` and `POST /v1/threads/{t}`.
Conversations: `GET/DELETE /v1/conversations/{c}/items/{i}` and `POST /v1/conversations/{c}`
(there is no item update). Metadata sent replaces the object's metadata (a guess: see
docs/fake-upstream.md).
"""

from flask import request

from .assistants import find_thread
from .errors import bad_request, check_known_params, missing_param, not_found
from .responses import find_conversation
from .state import FakeState

ITEM_GET_PARAMS = {"include", "include[]"}


def _metadata(body, required=False):
    """The body's `metadata`: an object of at most 16 string pairs (None when absent and optional)."""
    if "metadata" not in body or body["metadata"] is None:
        if required:
            raise missing_param("metadata")
        return None
    metadata = body["metadata"]
    if not isinstance(metadata, dict) or len(metadata) > 16 or not all(isinstance(v, str) for v in metadata.values()):
        raise bad_request("Invalid 'metadata': expected an object of at most 16 string values.", param="metadata")
    return dict(metadata)


def update_thread(fake, thread_id, body):
    """POST /v1/threads/{id}: `metadata` (and `tool_resources`, accepted and ignored)."""
    check_known_params(body, {"metadata", "tool_resources"})
    thread = find_thread(fake, thread_id)
    metadata = _metadata(body)
    if metadata is not None:
        thread.metadata = metadata
    return thread.to_api()


def _message_index(fake, thread_id, message_id):
    thread = find_thread(fake, thread_id)
    thread.advance(fake.now())
    for index, message in enumerate(thread.messages):
        if message["id"] == message_id:
            return thread, index
    raise not_found(f"No message found with id '{message_id}'.")


def get_message(fake, thread_id, message_id):
    """GET /v1/threads/{t}/messages/{m}."""
    thread, index = _message_index(fake, thread_id, message_id)
    return thread.messages[index]


def update_message(fake, thread_id, message_id, body):
    """POST /v1/threads/{t}/messages/{m}: only `metadata`; stored messages are replaced, never mutated."""
    check_known_params(body, {"metadata"})
    thread, index = _message_index(fake, thread_id, message_id)
    metadata = _metadata(body)
    if metadata is not None:
        thread.messages[index] = dict(thread.messages[index], metadata=metadata)
    return thread.messages[index]


def delete_message(fake, thread_id, message_id):
    """DELETE /v1/threads/{t}/messages/{m}."""
    thread, index = _message_index(fake, thread_id, message_id)
    del thread.messages[index]
    return {"id": message_id, "object": "thread.message.deleted", "deleted": True}


def update_conversation(fake, conversation_id, body):
    """POST /v1/conversations/{id}: `metadata` only, and required."""
    check_known_params(body, {"metadata"})
    conversation = find_conversation(fake, conversation_id)
    conversation.metadata = _metadata(body, required=True)
    return conversation.to_api()


def _item_index(fake, conversation_id, item_id):
    conversation = find_conversation(fake, conversation_id)
    conversation.advance(fake.now())
    for index, item in enumerate(conversation.items):
        if item["id"] == item_id:
            return conversation, index
    raise not_found(f"Item with id '{item_id}' not found.")


def get_item(fake, conversation_id, item_id, args):
    """GET /v1/conversations/{c}/items/{i}: `include` accepted and ignored."""
    for name in args:
        if name not in ITEM_GET_PARAMS:
            raise bad_request(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    conversation, index = _item_index(fake, conversation_id, item_id)
    return conversation.items[index]


def delete_item(fake, conversation_id, item_id):
    """DELETE /v1/conversations/{c}/items/{i}: answers the conversation; refused while a response is active."""
    conversation, index = _item_index(fake, conversation_id, item_id)
    conversation.refuse_if_locked(fake.now())
    del conversation.items[index]
    return conversation.to_api()


def register(app, fake: FakeState, read_body):
    """Add these routes to the fake's `app`; `read_body` parses a request's JSON object."""

    def locked(operation, *args):
        with fake.lock:
            return operation(fake, *args)

    @app.post("/v1/threads/<thread_id>")
    def update_thread_route(thread_id):
        return locked(update_thread, thread_id, read_body())

    @app.get("/v1/threads/<thread_id>/messages/<message_id>")
    def get_message_route(thread_id, message_id):
        return locked(get_message, thread_id, message_id)

    @app.post("/v1/threads/<thread_id>/messages/<message_id>")
    def update_message_route(thread_id, message_id):
        return locked(update_message, thread_id, message_id, read_body())

    @app.delete("/v1/threads/<thread_id>/messages/<message_id>")
    def delete_message_route(thread_id, message_id):
        return locked(delete_message, thread_id, message_id)

    @app.post("/v1/conversations/<conversation_id>")
    def update_conversation_route(conversation_id):
        return locked(update_conversation, conversation_id, read_body())

    @app.get("/v1/conversations/<conversation_id>/items/<item_id>")
    def get_item_route(conversation_id, item_id):
        return locked(get_item, conversation_id, item_id, request.args)

    @app.delete("/v1/conversations/<conversation_id>/items/<item_id>")
    def delete_item_route(conversation_id, item_id):
        return locked(delete_item, conversation_id, item_id)

"""Threads and messages: ownership checks, the upstream call, and the record."""

from __future__ import annotations

from app import attachments as thread_files
from app.contract import MessagePage, UpstreamError, UpstreamNotFound
from app.errors import not_found, thread_busy
from app.services import Services
from app.store.thread_records import ThreadPage


def require_thread(services: Services, owner: str, thread_id: str) -> None:
    """404 unless the thread exists here and belongs to `owner`."""
    _owned(services.records.thread_owner(thread_id), owner, thread_id)


def _owned(thread_owner: str | None, owner: str, thread_id: str) -> None:
    """404 unless the thread's recorded owner (None: no such thread) is `owner`."""
    if thread_owner != owner:
        raise not_found("thread", thread_id)


def create(services: Services, owner: str, messages: list[dict], metadata: dict | None) -> dict:
    """A new thread with its first messages; their attachments are checked before anything is made."""
    attached = [a for m in messages for a in m.get("attachments") or []]
    thread_files.check_owned(services, owner, attached)
    thread_files.retry_deletions(services)
    thread, added = services.engine.create_thread(messages, metadata)
    services.records.add_thread(thread["id"], owner, services.engine.name, thread.get("metadata"))
    if attached and services.engine.name == "responses":
        try:
            thread_files.attach(services, thread["id"], attached)
        except UpstreamError:
            delete(services, owner, thread["id"])  # nothing half-done: the thread goes, with its store
            raise
        for message, given in zip(added, messages, strict=True):
            message["attachments"] = list(given.get("attachments") or [])
        thread["tool_resources"] = _tool_resources(services, thread["id"])
    services.records.add_messages(thread["id"], added)
    return thread


def _tool_resources(services: Services, thread_id: str) -> dict:
    """The thread's `tool_resources` as the Assistants API showed them (responses engine: its store)."""
    store_id = services.knowledge.thread_vector_store(thread_id)
    return {"file_search": {"vector_store_ids": [store_id]}} if store_id else {}


def retrieve(services: Services, owner: str, thread_id: str) -> dict:
    require_thread(services, owner, thread_id)
    thread = services.engine.get_thread(thread_id)
    if services.engine.name == "responses":
        thread["tool_resources"] = _tool_resources(services, thread_id)
    return thread


def delete(services: Services, owner: str, thread_id: str) -> dict:
    """Delete the thread upstream and its vector store (retried later if that fails), and forget it."""
    require_thread(services, owner, thread_id)
    deleted = services.engine.delete_thread(thread_id)
    services.records.forget_thread(thread_id)
    thread_files.delete_thread_store(services, thread_id)
    thread_files.retry_deletions(services)
    return deleted


def add_message(
    services: Services,
    owner: str,
    thread_id: str,
    role: str,
    text: str,
    metadata: dict | None,
    attachments: list[dict] | None = None,
) -> dict:
    """Add a message; its file_search attachments go into the thread's store first (responses engine)."""
    require_thread(services, owner, thread_id)
    attachments = attachments or []
    thread_files.check_owned(services, owner, attachments)
    active = services.records.active_run(thread_id)
    if active is not None:
        raise thread_busy(thread_id, active)
    if services.engine.name == "responses":
        thread_files.attach(services, thread_id, attachments)
        message = services.engine.add_message(thread_id, role, text, metadata)
        message["attachments"] = attachments
    else:
        message = services.engine.add_message(thread_id, role, text, metadata, attachments)
    services.records.add_messages(thread_id, [message])
    return message


def list_messages(services: Services, owner: str, thread_id: str, page: MessagePage) -> dict:
    engine = services.engine
    if engine.full_message_lists:
        require_thread(services, owner, thread_id)
        return engine.list_messages(thread_id, page)
    if page.before is not None or page.run_id is not None:
        require_thread(services, owner, thread_id)
        return services.records.list_messages(thread_id, page)
    # The newest page (what a chat shows) is most likely the newest records: read with the owner's
    # check, they spare the completion a second read.
    newest = page.limit if page.order == "desc" and page.after is None else 0
    thread_owner, read = services.records.owner_and_newest_messages(thread_id, newest)
    _owned(thread_owner, owner, thread_id)
    listed = engine.list_messages(thread_id, page)
    listed["data"] = services.records.complete_messages(thread_id, listed["data"], read)
    return listed


def list_threads(services: Services, owner: str, page: ThreadPage) -> dict:
    """The owner's threads, from the record: no upstream API lists them."""
    return services.records.list_threads(owner, page)


def update(services: Services, owner: str, thread_id: str, metadata: dict | None) -> dict:
    """Set the thread's metadata upstream and in the record; without `metadata`, the thread as it is."""
    require_thread(services, owner, thread_id)
    if metadata is None:
        return services.engine.get_thread(thread_id)
    thread = services.engine.update_thread(thread_id, metadata)
    services.records.set_thread_metadata(thread_id, thread.get("metadata"))
    return thread


def require_message(services: Services, owner: str, thread_id: str, message_id: str) -> None:
    """404 unless the thread is the owner's and the record does not place the message in another thread."""
    require_thread(services, owner, thread_id)
    if services.records.message_thread(message_id) not in (None, thread_id):
        raise not_found("message", message_id)


def _completed(services: Services, thread_id: str, message: dict) -> dict:
    """The upstream's message with what the record knows of it, where the upstream's lacks it."""
    if services.engine.full_message_lists:
        return message
    return services.records.complete_messages(thread_id, [message])[0]


def retrieve_message(services: Services, owner: str, thread_id: str, message_id: str) -> dict:
    require_message(services, owner, thread_id, message_id)
    return _completed(services, thread_id, services.engine.get_message(thread_id, message_id))


def update_message(services: Services, owner: str, thread_id: str, message_id: str, metadata: dict | None) -> dict:
    """Set the message's metadata upstream, or in the record where the upstream cannot keep it."""
    require_message(services, owner, thread_id, message_id)
    if metadata is None:
        return retrieve_message(services, owner, thread_id, message_id)
    updated = services.engine.update_message(thread_id, message_id, metadata)
    message = dict(_completed(services, thread_id, updated), metadata=updated["metadata"])
    services.records.save_message(thread_id, message)
    return message


def delete_message(services: Services, owner: str, thread_id: str, message_id: str) -> dict:
    """Delete the message upstream and from the record; refused while a run holds the thread."""
    require_message(services, owner, thread_id, message_id)
    active = services.records.active_run(thread_id)
    if active is not None:
        raise thread_busy(thread_id, active)
    try:
        deleted = services.engine.delete_message(thread_id, message_id)
    except UpstreamNotFound:
        services.records.forget_message(message_id)  # gone upstream already: no list should show it
        raise
    services.records.forget_message(message_id)
    return deleted

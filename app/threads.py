"""Threads and messages: ownership checks, the upstream call, and the record."""

from __future__ import annotations

from app.backend import Backend
from app.engines.base import MessagePage
from app.errors import not_found, thread_busy


def require_thread(backend: Backend, owner: str, thread_id: str) -> None:
    """404 unless the thread exists here and belongs to `owner`."""
    if backend.records.thread_owner(thread_id) != owner:
        raise not_found("thread", thread_id)


def create(backend: Backend, owner: str, messages: list[dict], metadata: dict | None) -> dict:
    thread, added = backend.engine.create_thread(messages, metadata)
    backend.records.add_thread(thread["id"], owner, backend.engine.name)
    backend.records.add_messages(thread["id"], added)
    return thread


def retrieve(backend: Backend, owner: str, thread_id: str) -> dict:
    require_thread(backend, owner, thread_id)
    return backend.engine.get_thread(thread_id)


def delete(backend: Backend, owner: str, thread_id: str) -> dict:
    require_thread(backend, owner, thread_id)
    deleted = backend.engine.delete_thread(thread_id)
    backend.records.forget_thread(thread_id)
    return deleted


def add_message(backend: Backend, owner: str, thread_id: str, role: str, text: str, metadata: dict | None) -> dict:
    require_thread(backend, owner, thread_id)
    active = backend.records.active_run(thread_id)
    if active is not None:
        raise thread_busy(thread_id, active)
    message = backend.engine.add_message(thread_id, role, text, metadata)
    backend.records.add_messages(thread_id, [message])
    return message


def list_messages(backend: Backend, owner: str, thread_id: str, page: MessagePage) -> dict:
    require_thread(backend, owner, thread_id)
    engine = backend.engine
    if engine.full_message_lists:
        return engine.list_messages(thread_id, page)
    if page.before is not None or page.run_id is not None:
        return backend.records.list_messages(thread_id, page)
    listed = engine.list_messages(thread_id, page)
    listed["data"] = backend.records.complete_messages(thread_id, listed["data"])
    return listed

"""Threads and messages: ownership checks, the upstream call, and the record."""

from __future__ import annotations

from app.contract import MessagePage
from app.errors import not_found, thread_busy
from app.services import Services


def require_thread(services: Services, owner: str, thread_id: str) -> None:
    """404 unless the thread exists here and belongs to `owner`."""
    if services.records.thread_owner(thread_id) != owner:
        raise not_found("thread", thread_id)


def create(services: Services, owner: str, messages: list[dict], metadata: dict | None) -> dict:
    thread, added = services.engine.create_thread(messages, metadata)
    services.records.add_thread(thread["id"], owner, services.engine.name)
    services.records.add_messages(thread["id"], added)
    return thread


def retrieve(services: Services, owner: str, thread_id: str) -> dict:
    require_thread(services, owner, thread_id)
    return services.engine.get_thread(thread_id)


def delete(services: Services, owner: str, thread_id: str) -> dict:
    require_thread(services, owner, thread_id)
    deleted = services.engine.delete_thread(thread_id)
    services.records.forget_thread(thread_id)
    return deleted


def add_message(services: Services, owner: str, thread_id: str, role: str, text: str, metadata: dict | None) -> dict:
    require_thread(services, owner, thread_id)
    active = services.records.active_run(thread_id)
    if active is not None:
        raise thread_busy(thread_id, active)
    message = services.engine.add_message(thread_id, role, text, metadata)
    services.records.add_messages(thread_id, [message])
    return message


def list_messages(services: Services, owner: str, thread_id: str, page: MessagePage) -> dict:
    require_thread(services, owner, thread_id)
    engine = services.engine
    if engine.full_message_lists:
        return engine.list_messages(thread_id, page)
    if page.before is not None or page.run_id is not None:
        return services.records.list_messages(thread_id, page)
    listed = engine.list_messages(thread_id, page)
    listed["data"] = services.records.complete_messages(thread_id, listed["data"])
    return listed

"""Files and vector stores as a user owns them, and the vector stores of each assistant type.

Every function checks ownership in the backend's database before it calls the
upstream: another user's file or store is a 404, exactly like one that does not
exist, and nothing reaches the upstream for it.
"""

from __future__ import annotations

import logging
from typing import BinaryIO

from app.assistant_types import AssistantType
from app.contract import UpstreamError, UpstreamNotFound, list_page
from app.errors import bad_request, not_found
from app.services import Services
from app.settings import MAX_VECTOR_STORES_PER_SEARCH

log = logging.getLogger("app.knowledge")


def type_vector_store_ids(services: Services, assistant_type: AssistantType) -> list[str]:
    """The vector stores a type's file_search uses: ASSISTANT_<TYPE>_VECTOR_STORE_IDS, then those an
    administrator added (POST .../assistants/{type}), each once."""
    added = services.knowledge.type_vector_stores(assistant_type.name)
    return list(dict.fromkeys([*assistant_type.vector_store_ids, *added]))


def set_type_vector_stores(services: Services, admin: str, assistant_type: AssistantType, store_ids: list[str]):
    """Give the type these vector stores on top of its settings' ones, after checking that each exists
    upstream and is no other user's."""
    configured = set(assistant_type.vector_store_ids)
    extra = [s for s in dict.fromkeys(store_ids) if s not in configured]
    total = len(configured) + len(extra)
    if total > MAX_VECTOR_STORES_PER_SEARCH:
        raise bad_request(
            f"'tool_resources.file_search.vector_store_ids': a type searches at most {MAX_VECTOR_STORES_PER_SEARCH} "
            f"vector stores (file_search's limit), {len(configured)} of them from its settings; got {total}."
        )
    for store_id in extra:
        owner = services.knowledge.vector_store_owner(store_id)
        if owner is not None and owner != admin:
            raise not_found("vector store", store_id)
    for store_id in extra:
        _upstream_or_404(lambda s=store_id: services.knowledge_upstream.vector_store(s), "vector store", store_id)
    services.knowledge.set_type_vector_stores(assistant_type.name, extra, admin)


# files


def upload_file(services: Services, user: str, filename: str, stream: BinaryIO, content_type: str, purpose: str):
    """Send the file upstream and record it as the user's."""
    file = services.knowledge_upstream.upload_file(filename, stream, content_type, purpose)
    _recorded_or_undone(lambda: services.knowledge.add_file(file, user), services.knowledge_upstream.delete_file, file)
    return file


def list_files(services: Services, user: str, *, limit: int, order: str, after: str | None, purpose: str | None):
    data, has_more = services.knowledge.list_files(user, limit=limit, order=order, after=after, purpose=purpose)
    return list_page(data, has_more)


def retrieve_file(services: Services, user: str, file_id: str) -> dict:
    """The user's file as the upstream has it now."""
    if not services.knowledge.owns_file(file_id, user):
        raise not_found("file", file_id)
    return _upstream_or_404(lambda: services.knowledge_upstream.file(file_id), "file", file_id)


def delete_file(services: Services, user: str, file_id: str) -> dict:
    """Delete the user's file upstream (which takes it out of every vector store) and forget it."""
    if not services.knowledge.owns_file(file_id, user):
        raise not_found("file", file_id)
    deleted = _deleted_upstream(services.knowledge_upstream.delete_file, file_id, "file")
    services.knowledge.forget_file(file_id)
    return deleted


def _deleted_upstream(delete, object_id: str, kind: str) -> dict:
    """The upstream's answer to deleting the object; one already gone upstream counts as deleted."""
    try:
        return delete(object_id)
    except UpstreamNotFound:
        return {"id": object_id, "object": kind, "deleted": True}


def check_files(services: Services, user: str, file_ids: list[str]) -> None:
    """404 for the first file that is not the user's."""
    for file_id in file_ids:
        if not services.knowledge.owns_file(file_id, user):
            raise not_found("file", file_id)


# vector stores


def _own_store(services: Services, user: str, store_id: str) -> None:
    if services.knowledge.vector_store_owner(store_id) != user:
        raise not_found("vector store", store_id)


def create_vector_store(services: Services, user: str, body: dict) -> dict:
    """Create a vector store upstream, its files all the user's, and record it as theirs."""
    check_files(services, user, body.get("file_ids") or [])
    store = services.knowledge_upstream.create_vector_store(body)
    undo = services.knowledge_upstream.delete_vector_store
    _recorded_or_undone(lambda: services.knowledge.add_vector_store(store["id"], user), undo, store)
    return store


def list_vector_stores(services: Services, user: str, *, limit: int, order: str, after, before) -> dict:
    """The user's vector stores as the upstream has them now; one gone upstream is left out."""
    ids, has_more = services.knowledge.list_vector_stores(user, limit=limit, order=order, after=after, before=before)
    stores = []
    for store_id in ids:
        try:
            stores.append(services.knowledge_upstream.vector_store(store_id))
        except UpstreamNotFound:
            continue
    return list_page(stores, has_more)


def retrieve_vector_store(services: Services, user: str, store_id: str) -> dict:
    _own_store(services, user, store_id)
    return _upstream_or_404(lambda: services.knowledge_upstream.vector_store(store_id), "vector store", store_id)


def delete_vector_store(services: Services, user: str, store_id: str) -> dict:
    """Delete the user's store upstream and forget it (also where an assistant type named it)."""
    _own_store(services, user, store_id)
    deleted = _deleted_upstream(services.knowledge_upstream.delete_vector_store, store_id, "vector_store.deleted")
    services.knowledge.forget_vector_store(store_id)
    return deleted


def add_vector_store_file(services: Services, user: str, store_id: str, body: dict):
    """Add one of the user's files to one of their stores: (vector store file, poll hint)."""
    _own_store(services, user, store_id)
    check_files(services, user, [body["file_id"]])
    return services.knowledge_upstream.add_vector_store_file(store_id, body)


def list_vector_store_files(services: Services, user: str, store_id: str, params: dict) -> dict:
    _own_store(services, user, store_id)
    return services.knowledge_upstream.vector_store_files(store_id, params)


def retrieve_vector_store_file(services: Services, user: str, store_id: str, file_id: str):
    """(vector store file, poll hint)."""
    _own_store(services, user, store_id)
    return services.knowledge_upstream.vector_store_file(store_id, file_id)


def delete_vector_store_file(services: Services, user: str, store_id: str, file_id: str) -> dict:
    """Take a file out of the user's store; the file itself stays."""
    _own_store(services, user, store_id)
    return services.knowledge_upstream.delete_vector_store_file(store_id, file_id)


def _recorded_or_undone(record, undo, created: dict) -> None:
    """Record what was just made upstream; if the record fails, delete it upstream again (best effort),
    so that nothing is left there that no user owns."""
    try:
        record()
    except Exception:
        try:
            undo(created["id"])
        except UpstreamError:
            log.warning("could not delete unrecorded %s upstream", created["id"])
        raise


def _upstream_or_404(call, kind: str, object_id: str):
    """The call's answer; the backend's own 404 when the upstream no longer has the object."""
    try:
        return call()
    except UpstreamNotFound:
        raise not_found(kind, object_id) from None

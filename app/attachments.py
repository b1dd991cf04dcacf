"""Message attachments and the thread's vector store (no HTTP).

On the responses engine the backend does what the Assistants API did: a message's
`file_search` attachments go into the thread's own vector store upstream (made when first
needed, recorded with the thread, deleted with it), and every response of a run searches
the type's stores and the thread's. A run waits for the thread store's files to be
processed, inside its deadline, before it starts. A store whose upstream delete failed is
remembered and tried again at the next thread created or deleted in any process. On the
assistants engine attachments pass through to the upstream, which does all of this itself.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass

from app import knowledge
from app.assistant_types import AssistantType
from app.contract import FileSearch, UpstreamError, UpstreamNotFound, UpstreamTransient
from app.engines.client import QUICK_CALL_SECONDS
from app.errors import bad_request
from app.runs.errors import DeadlineBeforeStart
from app.services import Services
from app.settings import MAX_VECTOR_STORES_PER_SEARCH

log = logging.getLogger("app.attachments")

# A message attaches at most this many files (the Assistants API's documented limit on a message's files).
MAX_ATTACHMENTS_PER_MESSAGE = 10
ATTACHMENT_TOOLS = ("file_search", "code_interpreter")
FILE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,128}")  # as app/api/validation.py's IDs: safe in a URL
# What `include[]` on run create may ask for: the results' text (Assistants run steps).
INCLUDE_RESULTS = "step_details.tool_calls[*].file_search.results[*].content"
# Failed deletes tried again at a thread's creation or deletion, at most this many at a time.
RETRIES_PER_REQUEST = 3
PROCESSING_FIRST_PAUSE = 0.1
PROCESSING_MAX_PAUSE = 1.0


def checked_attachments(value, engine_name: str) -> list[dict]:
    """A message's `attachments` `[{file_id, tools: [{type}]}]`, checked against OpenAI's limits:
    at most 10 per message, each tool type at most once per attachment."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise bad_request('\'attachments\' must be an array of {"file_id", "tools"}.')
    if len(value) > MAX_ATTACHMENTS_PER_MESSAGE:
        raise bad_request(f"'attachments': a message attaches at most {MAX_ATTACHMENTS_PER_MESSAGE} files.")
    for i, attachment in enumerate(value):
        where = f"'attachments[{i}]'"
        if not isinstance(attachment, dict) or set(attachment) - {"file_id", "tools"}:
            raise bad_request(f'{where} must be an object {{"file_id", "tools"}}.')
        if not isinstance(attachment.get("file_id"), str) or not attachment["file_id"]:
            raise bad_request(f"{where}.file_id must be a file ID.")
        if not FILE_ID_PATTERN.fullmatch(attachment["file_id"]):
            raise bad_request(f"{where}.file_id: expected 1-128 characters of A-Z, a-z, 0-9, '_' or '-'.")
        tools = attachment.get("tools")
        if not isinstance(tools, list) or not tools:
            raise bad_request(f'{where}.tools must be a non-empty array of {{"type": "file_search"}}.')
        kinds = [tool.get("type") if isinstance(tool, dict) else None for tool in tools]
        if any(kind not in ATTACHMENT_TOOLS or set(tool) != {"type"} for kind, tool in zip(kinds, tools, strict=True)):
            raise bad_request(
                f'{where}.tools: each tool is {{"type": "file_search"}} or {{"type": "code_interpreter"}}.'
            )
        if len(set(kinds)) != len(kinds):
            raise bad_request(f"{where}.tools: each tool type at most once per attachment (at most 2 tools).")
        if "code_interpreter" in kinds and engine_name == "responses":
            raise bad_request(
                f"{where}.tools: code_interpreter attachments are not supported on this engine; "
                'attach files with {"type": "file_search"}.'
            )
    return value


def check_owned(services: Services, owner: str, attachments: list[dict]) -> None:
    """404 for the first attached file that is not the owner's (nothing reaches the upstream)."""
    knowledge.check_files(services, owner, [a["file_id"] for a in attachments])


def searched_files(attachments: list[dict]) -> list[str]:
    """The files attached for file_search, each once."""
    ids = [a["file_id"] for a in attachments if any(t["type"] == "file_search" for t in a["tools"])]
    return list(dict.fromkeys(ids))


def attach(services: Services, thread_id: str, attachments: list[dict]) -> None:
    """Responses engine: put the file_search attachments into the thread's store, made when first needed."""
    file_ids = searched_files(attachments)
    if not file_ids or services.engine.name != "responses":
        return
    store_id = _thread_store(services, thread_id)
    for file_id in file_ids:
        services.knowledge_upstream.add_vector_store_file(store_id, {"file_id": file_id})


def _thread_store(services: Services, thread_id: str) -> str:
    """The thread's store, made upstream and recorded when it has none yet."""
    store_id = services.knowledge.thread_vector_store(thread_id)
    if store_id is not None:
        return store_id
    store = services.knowledge_upstream.create_vector_store({"name": f"thread {thread_id}"})
    if services.knowledge.set_thread_vector_store(thread_id, store["id"]):
        log.info("thread %s: vector store %s made for its attachments", thread_id, store["id"])
        return store["id"]
    _delete_store(services, store["id"], thread_id)  # another request made one first: keep theirs
    return services.knowledge.thread_vector_store(thread_id)


@dataclass(frozen=True)
class RunStores:
    """The vector stores the record gives a run: its type's (settings, then an administrator's),
    and its thread's own (attachments), if any."""

    type_stores: tuple[str, ...]
    thread_store: str | None


def run_stores(services: Services, thread_id: str, assistant: AssistantType) -> RunStores | None:
    """Responses engine: the stores a run of `assistant` on the thread may search, read from the
    record (no upstream call; read in the transaction that locks the thread)."""
    if services.engine.name != "responses":
        return None
    type_stores = tuple(knowledge.type_vector_store_ids(services, assistant))
    return RunStores(type_stores, services.knowledge.thread_vector_store(thread_id))


def run_file_search(
    services: Services,
    owner: str,
    thread_id: str,
    assistant: AssistantType,
    stores: RunStores | None,
    include: tuple[str, ...],
    deadline: float,
    sleep=time.sleep,
) -> FileSearch | None:
    """Responses engine: the file_search of a run over `stores` (the type's, then the thread's),
    once the thread store's files are processed; None when there is nothing to search.

    A 400 names the limit of stores per search or a file that failed processing; the wait ends
    with the run's deadline (DeadlineBeforeStart).
    """
    if stores is None:
        return None
    store_ids = list(stores.type_stores)
    thread_store = stores.thread_store
    if thread_store is not None:
        if len(store_ids) + 1 > MAX_VECTOR_STORES_PER_SEARCH:
            raise bad_request(
                f"file_search searches at most {MAX_VECTOR_STORES_PER_SEARCH} vector stores per call: assistant type "
                f"'{assistant.name}' has {len(store_ids)} and this thread has its own (its attachments). Use a "
                f"thread without attachments, or a type with fewer vector stores."
            )
        try:
            _wait_processed(services, owner, thread_store, deadline, sleep)
            store_ids.append(thread_store)
        except UpstreamNotFound:  # deleted upstream behind the backend's back: nothing left to search
            log.warning("thread %s: its vector store %s is gone upstream; forgotten", thread_id, thread_store)
            services.knowledge.forget_thread_vector_store(thread_id)
    if not store_ids:
        return None
    return FileSearch(tuple(store_ids), assistant.file_search_max_results, INCLUDE_RESULTS in include)


def _wait_processed(services: Services, owner: str, store_id: str, deadline: float, sleep) -> None:
    """Wait until no file of the store is being processed; a 400 names a file that failed."""
    pause = PROCESSING_FIRST_PAUSE
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise DeadlineBeforeStart()
        try:
            counts = services.knowledge_upstream.vector_store(store_id, min(left, QUICK_CALL_SECONDS))["file_counts"]
        except UpstreamTransient as exc:
            log.info("vector store %s: %s; looking again", store_id, exc)
            counts = {"in_progress": 1}
        if counts.get("failed") or counts.get("cancelled"):
            raise _failed_file(services, owner, store_id)
        if not counts.get("in_progress"):
            return
        sleep(max(0.0, min(pause, deadline - time.monotonic())))
        pause = min(pause * 1.5, PROCESSING_MAX_PAUSE)


def _failed_file(services: Services, owner: str, store_id: str):
    """The 400 that names a file of the store that failed processing."""
    failed = []
    for status in ("failed", "cancelled"):
        failed += services.knowledge_upstream.vector_store_files(store_id, {"filter": status, "limit": 1})["data"]
    if not failed:
        return bad_request("A file attached to this thread could not be processed for file_search.")
    file = failed[0]
    recorded = services.knowledge.file(file["id"], owner) or {}
    name = f" ({recorded['filename']})" if recorded.get("filename") else ""
    error = file.get("last_error") or {}
    why = f": {error.get('code')}: {error.get('message')}" if error else f": {file.get('status')}"
    return bad_request(
        f"File '{file['id']}'{name} attached to this thread could not be processed for file_search{why}. "
        f"Delete the file (DELETE .../files/{file['id']}) to take it out of the thread, then run again."
    )


# deleting a thread's store


def delete_thread_store(services: Services, thread_id: str) -> None:
    """Delete the thread's store upstream (a failure is remembered and tried again later)."""
    store_id = services.knowledge.thread_vector_store(thread_id)
    if store_id is None:
        return
    services.knowledge.forget_thread_vector_store(thread_id)
    _delete_store(services, store_id, thread_id)


def _delete_store(services: Services, store_id: str, thread_id: str) -> bool:
    try:
        services.knowledge_upstream.delete_vector_store(store_id)
    except UpstreamNotFound:
        pass  # already gone
    except UpstreamError as exc:
        log.warning("thread %s: vector store %s not deleted (%s); will try again", thread_id, store_id, exc)
        services.knowledge.deletion_failed(store_id, thread_id, str(exc))
        return False
    return True


def retry_deletions(services: Services, limit: int = RETRIES_PER_REQUEST) -> int:
    """Try again the failed deletes that are due; how many succeeded."""
    done = 0
    for store_id, thread_id in services.knowledge.deletions_due(limit):
        if _delete_store(services, store_id, thread_id):
            services.knowledge.deletion_done(store_id)
            log.info("thread %s: its vector store %s is deleted now", thread_id, store_id)
            done += 1
    return done

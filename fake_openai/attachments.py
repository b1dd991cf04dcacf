"""Assistants v2 thread `tool_resources` and message `attachments`. Every function expects `fake.lock` to be held.

A thread has at most one vector store: given by id, made by the `vector_stores` helper,
or made by the first message attaching a file for `file_search` (expiring 7 days after
it was last active, as OpenAI's thread stores do); later file_search attachments join it.
"""

from . import vector_stores
from .errors import bad_request, check_known_params, invalid_type, invalid_value, missing_param
from .files import require_file

ATTACHMENT_TOOLS = ("file_search", "code_interpreter")
THREAD_STORE_EXPIRY = {"anchor": "last_active_at", "days": 7}
MAX_CODE_FILES = 20
STORE_HELPER_PARAMS = {"file_ids", "chunking_strategy", "metadata"}


class Resources:
    """Checked thread `tool_resources`: a store id or a store to make, and code_interpreter files."""

    def __init__(self, store_id=None, new_store=None, code_file_ids=()):
        self.store_id = store_id
        self.new_store = new_store  # (file ids, chunking strategy or None, metadata)
        self.code_file_ids = list(code_file_ids)


def check_tool_resources(fake, value, param="tool_resources"):
    """Validate thread `tool_resources` (nothing is created yet)."""
    if value is None:
        return Resources()
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    check_known_params(value, {"file_search", "code_interpreter"})
    code = value.get("code_interpreter") or {}
    if not isinstance(code, dict):
        raise invalid_type(f"{param}.code_interpreter", "an object", code)
    code_ids = vector_stores.check_file_ids(
        fake, code.get("file_ids") or [], f"{param}.code_interpreter.file_ids", MAX_CODE_FILES
    )
    search = value.get("file_search") or {}
    if not isinstance(search, dict):
        raise invalid_type(f"{param}.file_search", "an object", search)
    check_known_params(search, {"vector_store_ids", "vector_stores"})
    store_ids = search.get("vector_store_ids") or []
    helpers = search.get("vector_stores") or []
    if not isinstance(store_ids, list) or not isinstance(helpers, list):
        raise invalid_type(f"{param}.file_search", "arrays of vector store ids and of vector stores", search)
    if len(store_ids) + len(helpers) > 1:
        raise bad_request(
            f"Invalid '{param}.file_search': a thread can have at most 1 vector store.",
            param=f"{param}.file_search.vector_store_ids",
            code="array_above_max_length",
        )
    if store_ids:
        return Resources(vector_stores.find_store(fake, store_ids[0]).id, None, code_ids)
    if helpers:
        helper, where = helpers[0], f"{param}.file_search.vector_stores[0]"
        if not isinstance(helper, dict):
            raise invalid_type(where, "an object", helper)
        check_known_params(helper, STORE_HELPER_PARAMS)
        file_ids = vector_stores.check_file_ids(fake, helper.get("file_ids") or [], f"{where}.file_ids")
        strategy = vector_stores.chunking_strategy(helper.get("chunking_strategy"))
        metadata = helper.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise invalid_type(f"{where}.metadata", "an object", metadata)
        return Resources(None, (file_ids, strategy, metadata), code_ids)
    return Resources(None, None, code_ids)


def apply_tool_resources(fake, thread, resources):
    """Give a new thread its checked resources (making its store if the helper asked for one)."""
    thread.code_file_ids = resources.code_file_ids
    if resources.store_id is not None:
        thread.vector_store_id = resources.store_id
    elif resources.new_store is not None:
        file_ids, strategy, metadata = resources.new_store
        store = vector_stores.new_store(fake, file_ids, strategy, metadata=metadata, expires_after=THREAD_STORE_EXPIRY)
        thread.vector_store_id = store.id
        thread.owns_store = True


def shown(thread):
    """The thread's `tool_resources` as OpenAI shows them (`{}` with nothing attached)."""
    resources = {}
    if thread.code_file_ids:
        resources["code_interpreter"] = {"file_ids": list(thread.code_file_ids)}
    if thread.vector_store_id is not None:
        resources["file_search"] = {"vector_store_ids": [thread.vector_store_id]}
    return resources


def check_attachments(fake, value, param="attachments"):
    """Validate message `attachments` `[{file_id, tools: [{type}]}]`; answers them as given."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid_type(param, "an array", value)
    for index, attachment in enumerate(value):
        where = f"{param}[{index}]"
        if not isinstance(attachment, dict):
            raise invalid_type(where, "an object", attachment)
        check_known_params(attachment, {"file_id", "tools"})
        if "file_id" not in attachment:
            raise missing_param(f"{where}.file_id")
        require_file(fake, attachment["file_id"], f"{where}.file_id")
        tools = attachment.get("tools") or []
        if not isinstance(tools, list):
            raise invalid_type(f"{where}.tools", "an array", tools)
        for number, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind not in ATTACHMENT_TOOLS:
                raise invalid_value(f"{where}.tools[{number}].type", kind, ATTACHMENT_TOOLS)
    return value


def attach(fake, thread, attachments):
    """Put the file_search attachments into the thread's store, making it when first needed."""
    for attachment in attachments:
        if not any(tool["type"] == "file_search" for tool in attachment.get("tools") or []):
            continue
        store = fake.vector_stores.get(thread.vector_store_id) if thread.vector_store_id else None
        if store is None:
            store = vector_stores.new_store(fake, expires_after=THREAD_STORE_EXPIRY)
            thread.vector_store_id = store.id
            thread.owns_store = True
        vector_stores.add_file(fake, store, fake.files[attachment["file_id"]])


def discard(fake, thread):
    """Delete the store a thread made, when the request making the thread fails after all."""
    if getattr(thread, "owns_store", False):
        fake.vector_stores.pop(thread.vector_store_id, None)

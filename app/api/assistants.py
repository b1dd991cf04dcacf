"""Assistant types as OpenAI Assistant objects: `/assistants`, `/assistants/<id>`.

A type is configured by the operator (ASSISTANT_<TYPE>_*): clients read it, an
administrator (ADMIN_USERS) may give it vector stores, and nobody creates or
deletes one through the API.
"""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from app import knowledge
from app.api import authenticate_caller, services
from app.api import knowledge_validation as kv
from app.api import validation as v
from app.assistant_types import AssistantType
from app.auth import require_admin
from app.contract import list_page
from app.errors import ApiError, bad_request, not_found
from app.services import Services

bp = Blueprint("assistants", __name__)
bp.before_request(authenticate_caller)

OPERATOR_ONLY = (
    "Assistant types are configured by the operator (ASSISTANT_<TYPE>_* settings); they cannot be {} through the API."
)
UPDATABLE = "Only 'tool_resources.file_search.vector_store_ids' of an assistant type can be changed"


def _find(s: Services, assistant_id: str) -> AssistantType:
    """The type named by its name or configured `asst_...` ID; 404 otherwise."""
    found = next((t for t in s.settings.assistant_types if assistant_id in (t.name, t.assistant_id)), None)
    if found is None:
        raise not_found("assistant", assistant_id)
    return found


def assistant_object(s: Services, t: AssistantType) -> dict:
    """The type as an Assistants v2 Assistant object."""
    store_ids = knowledge.type_vector_store_ids(s, t)
    tools = [{"type": "function", "function": tool.declaration()} for tool in t.tools]
    tool_resources = {}
    if store_ids:
        file_search = {"type": "file_search"}
        if t.file_search_max_results is not None:
            file_search["file_search"] = {"max_num_results": t.file_search_max_results}
        tools.append(file_search)
        tool_resources["file_search"] = {"vector_store_ids": store_ids}
    return {
        "id": t.assistant_id or t.name,
        "object": "assistant",
        "created_at": 0,
        "name": t.name,
        "description": t.description,
        "model": t.model,
        "instructions": t.instructions if s.settings.assistant_instructions_visible else None,
        "tools": tools,
        "tool_resources": tool_resources,
        "metadata": {},
        "temperature": t.temperature,
        "top_p": t.top_p,
        "response_format": "auto",
    }


@bp.get("/assistants")
def list_assistants():
    s = services()
    page = kv.list_args({"limit", "order", "after", "before"}, max_limit=100, default_limit=20)
    objects = [assistant_object(s, t) for t in s.settings.assistant_types]
    if page["order"] == "desc":
        objects.reverse()
    ids = [o["id"] for o in objects]
    start, end = 0, len(objects)
    if page["after"] is not None:
        start = ids.index(page["after"]) + 1 if page["after"] in ids else end
    if page["before"] is not None:
        end = ids.index(page["before"]) if page["before"] in ids else start
    window = objects[start:end]
    if page["before"] is not None and page["after"] is None:
        window = window[-page["limit"] :]
        return jsonify(list_page(window, start < end - len(window)))
    return jsonify(list_page(window[: page["limit"]], len(window) > page["limit"]))


@bp.get("/assistants/<assistant_id>")
def retrieve_assistant(assistant_id):
    s = services()
    return jsonify(assistant_object(s, _find(s, v.checked_id(assistant_id, "assistant"))))


@bp.post("/assistants/<assistant_id>")
def update_assistant(assistant_id):
    admin = require_admin()
    s = services()
    t = _find(s, v.checked_id(assistant_id, "assistant"))
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_request("Request body must be a JSON object (Content-Type: application/json).")
    others = sorted(set(body) - {"tool_resources"})
    if others:
        raise bad_request(f"{UPDATABLE}; not {', '.join(others)}.")
    resources = body.get("tool_resources")
    if not isinstance(resources, dict) or set(resources) != {"file_search"}:
        raise bad_request(f'{UPDATABLE}: send {{"tool_resources": {{"file_search": {{"vector_store_ids": [...]}}}}}}.')
    file_search = resources["file_search"]
    if not isinstance(file_search, dict) or set(file_search) != {"vector_store_ids"}:
        raise bad_request(f"{UPDATABLE}; 'tool_resources.file_search' takes only 'vector_store_ids'.")
    store_ids = file_search["vector_store_ids"]
    if not isinstance(store_ids, list) or not all(isinstance(i, str) for i in store_ids):
        raise bad_request("'tool_resources.file_search.vector_store_ids' must be a list of vector store IDs.")
    store_ids = [v.checked_id(i, "vector store") for i in store_ids]
    knowledge.set_type_vector_stores(s, admin, t, store_ids)
    return jsonify(assistant_object(s, t))


@bp.post("/assistants")
def create_assistant():
    raise _refused("created")


@bp.delete("/assistants/<assistant_id>")
def delete_assistant(assistant_id):
    raise _refused("deleted")


def _refused(what: str) -> ApiError:
    allowed = "GET, POST" if what == "deleted" else "GET"
    return ApiError(405, OPERATOR_ONLY.format(what), headers={"Allow": allowed, "x-should-retry": "false"})

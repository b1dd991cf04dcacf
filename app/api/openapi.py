"""`GET /openapi.json`: the OpenAPI 3.1 document of the contract, kept beside this module.

The file is served as it is, except that it describes this deployment's run requests:
its assistant types are the allowed values of `assistant_type`, and the run settings
it refuses whatever their value are left out (see `document_for`).
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from flask import Blueprint, jsonify

from app.api import services
from app.assistant_types import AssistantType
from app.environment import OVERRIDABLE

DOCUMENT = Path(__file__).with_name("openapi.json")

bp = Blueprint("openapi", __name__)


@cache
def load_document() -> dict:
    """The document as kept in the repository."""
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def document_for(types: tuple[AssistantType, ...], engine: str) -> dict:
    """The document for these assistant types on this engine: their names (and configured IDs) the
    only allowed types;
    `instructions` and `model` only where a type allows them; no `max_prompt_tokens` nor
    `last_messages` truncation on the responses engine."""
    document = copy.deepcopy(load_document())
    components = document["components"]
    names = [t.name for t in types]
    components["parameters"]["AssistantType"]["schema"]["enum"] = names
    for request in ("CreateRunRequest", "CreateThreadAndRunRequest"):
        components["schemas"][request]["properties"]["assistant_type"]["enum"] = names
    run = components["schemas"]["CreateRunRequest"]["properties"]
    run["assistant_id"]["enum"] = names + [t.assistant_id for t in types if t.assistant_id]
    for name in OVERRIDABLE:
        if not any(name in t.allow_overrides for t in types):
            del run[name]
    if engine == "responses":
        del run["max_prompt_tokens"]
        truncation = run["truncation_strategy"]["anyOf"][1]["properties"]
        truncation.update(type={"const": "auto"}, last_messages={"type": "null"})
    return document


@bp.get("/openapi.json")
def openapi_json():
    settings = services().settings
    return jsonify(document_for(settings.assistant_types, settings.engine))

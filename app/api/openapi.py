"""`GET /openapi.json`: the OpenAPI 3.1 document of the contract, kept beside this module.

The file is served as it is, except that the assistant types this deployment
configures are filled in as the allowed values of `assistant_type`.
"""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path

from flask import Blueprint, jsonify

from app.api import services

DOCUMENT = Path(__file__).with_name("openapi.json")

bp = Blueprint("openapi", __name__)


@cache
def load_document() -> dict:
    """The document as kept in the repository."""
    return json.loads(DOCUMENT.read_text(encoding="utf-8"))


def document_for(type_names: list[str]) -> dict:
    """The document with `type_names` as the only allowed assistant types."""
    document = copy.deepcopy(load_document())
    components = document["components"]
    components["parameters"]["AssistantType"]["schema"]["enum"] = list(type_names)
    for request in ("CreateRunRequest", "CreateThreadAndRunRequest"):
        components["schemas"][request]["properties"]["assistant_type"]["enum"] = list(type_names)
    return document


@bp.get("/openapi.json")
def openapi_json():
    names = [t.name for t in services().settings.assistant_types]
    return jsonify(document_for(names))

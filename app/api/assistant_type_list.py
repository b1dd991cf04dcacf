"""`GET /api/openai/assistant_types`: the names a run may give as `assistant_type`, for a client to choose from."""

from __future__ import annotations

from flask import Blueprint, jsonify

from app.api import authenticate_caller, services

bp = Blueprint("assistant_types", __name__)
bp.before_request(authenticate_caller)


@bp.get("/assistant_types")
def list_assistant_types():
    names = [t.name for t in services().settings.assistant_types]
    return jsonify(object="list", data=[{"id": name, "object": "assistant_type"} for name in names])

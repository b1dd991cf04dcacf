"""Usage: `GET .../usage` (the caller's tokens today and this month, and their budgets) and
`GET .../usage/users` (every user's, for the administrators of ADMIN_USERS)."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request

from app import usage
from app.api import authenticate_caller, services
from app.api import validation as v
from app.auth import require_admin

bp = Blueprint("usage", __name__)
bp.before_request(authenticate_caller)


def _query(allowed: set[str]) -> None:
    """400 for a query parameter the route does not take."""
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        raise v.bad_request(f"Unknown query parameter(s): {', '.join(unknown)}.")


@bp.get("/usage")
def my_usage():
    _query({"user"})
    user = request.args.get("user")
    if user is None or user == g.user:
        return jsonify(usage.report(services(), g.user))
    require_admin()
    if not user.strip() or len(user) > 255:
        raise v.bad_request("'user' must be a user ID of 1-255 characters.")
    return jsonify(usage.report(services(), user))


@bp.get("/usage/users")
def every_users_usage():
    _query(set())
    require_admin()
    return jsonify(usage.report_all(services()))

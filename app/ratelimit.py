"""Per-user rate limits (Flask-Limiter): one on starting runs, one on every API call.

The key is the authenticated user, so the caller is authenticated before any
limit is counted: a call without valid credentials gets its 401 and spends no
one's budget. Health checks, the OpenAPI document and CORS preflights are not
limited. Counts live in memory by default, or in Redis
(`RATELIMIT_STORAGE_URI`) when several instances must share them.
"""

from __future__ import annotations

import math
import time

from flask import Flask, current_app, g, jsonify, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded

from app.auth import authenticate
from app.settings import Settings

RUN_SCOPE = "runs"
API_SCOPE = "api"
_STARTS_RUN = "_rate_limited_as_run"


def run_limit(view):
    """Mark a view as starting a run, so that it also counts against RATELIMIT_RUNS."""
    setattr(view, _STARTS_RUN, True)
    return view


def _is_api_call() -> bool:
    """Whether this request goes to an authenticated API route (not health, docs or a preflight)."""
    # The API blueprints are registered under several prefixes, all below /api/.
    return request.method != "OPTIONS" and request.blueprint is not None and request.path.startswith("/api/")


def _starts_run() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, _STARTS_RUN, False)


def _user_key() -> str:
    return f"user:{g.user}"


def _too_many(error: RateLimitExceeded):
    """429 as the contract's JSON error, with a Retry-After in whole seconds."""
    breached = current_app.extensions["ratelimit"].current_limit
    reset_at = breached.window[0] if breached is not None else time.time()
    wait = max(1, math.ceil(reset_at - time.time()))
    what = "runs started" if error.limit.scope == RUN_SCOPE else "requests"
    response = jsonify(error=f"Too many {what}: at most {error.limit.limit} per user; try again in {wait} s.")
    response.status_code = 429
    response.headers["Retry-After"] = str(wait)
    return response


def init_app(app: Flask, settings: Settings) -> None:
    """Authenticate API calls first, then count them per user; answer a breach with 429."""
    limits = []
    if settings.ratelimit_default:
        limits.append(
            ApplicationLimit(
                limit_provider=settings.ratelimit_default,
                scope=API_SCOPE,
                exempt_when=lambda: not _is_api_call(),
            )
        )
    if settings.ratelimit_runs:
        limits.append(
            ApplicationLimit(
                limit_provider=settings.ratelimit_runs,
                scope=RUN_SCOPE,
                exempt_when=lambda: not (_is_api_call() and _starts_run()),
            )
        )

    if not limits:
        return  # both "off": no limiter, no storage

    @app.before_request
    def authenticate_before_counting():
        # App hooks run before blueprint hooks, and the limiter's hook is added
        # after this one: the user must be known when the limit is counted.
        if _is_api_call():
            authenticate(settings)

    limiter = Limiter(
        _user_key,
        application_limits=limits,
        storage_uri=settings.ratelimit_storage_uri,
        strategy="moving-window",
        key_prefix="assistants-backend",
    )
    limiter.init_app(app)
    app.extensions["ratelimit"] = limiter
    app.register_error_handler(RateLimitExceeded, _too_many)

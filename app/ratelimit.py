"""Per-user rate limits: one on starting runs, one on every API call (moving windows).

The key is the authenticated user, so the caller is authenticated before any
limit is counted: a call without valid credentials gets its 401 and spends no
one's budget. Health checks, the OpenAPI document and CORS preflights are not
limited. Counts live in this process by default, or in Redis
(`RATELIMIT_STORAGE_URI`) when several instances must share them (through the
`limits` package, as Flask-Limiter would).

One before_request hook does it all; in memory a user's window is a deque of the
instants of their calls. (Flask-Limiter cost about 0.1 ms on every request, limited
or not, and its memory storage started a timer thread every 10 ms under load.)
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter

from app.auth import authenticate
from app.errors import ApiError
from app.settings import Settings

RUN_SCOPE = "runs"
API_SCOPE = "api"
KEY_PREFIX = "assistants-backend"
API_PREFIXES = ("/api/", "/v1/")
_STARTS_RUN = "_rate_limited_as_run"


def run_limit(view):
    """Mark a view as starting a run, so that it also counts against RATELIMIT_RUNS."""
    setattr(view, _STARTS_RUN, True)
    return view


def _is_api_call() -> bool:
    """Whether this request goes to an authenticated API route (not health, docs or a preflight)."""
    # The API blueprints are registered under several prefixes, all below /api/ or /v1/.
    return request.method != "OPTIONS" and request.blueprint is not None and request.path.startswith(API_PREFIXES)


def _starts_run() -> bool:
    view = current_app.view_functions.get(request.endpoint or "")
    return getattr(view, _STARTS_RUN, False)


class MemoryWindows:
    """Moving windows in this process: a call is counted when fewer than `amount` calls
    fell in the last `expiry` seconds (the `limits` package's moving-window rule)."""

    def __init__(self, clock=time.time):
        self.clock = clock
        self._calls: dict[str, deque] = {}
        self._lock = threading.Lock()

    def _window(self, key: str, expiry: float, now: float) -> deque:
        calls = self._calls.setdefault(key, deque())
        while calls and calls[0] < now - expiry:
            calls.popleft()
        return calls

    def hit(self, item: RateLimitItem, key: str) -> bool:
        now = self.clock()
        with self._lock:
            calls = self._window(key, item.get_expiry(), now)
            if len(calls) >= item.amount:
                return False
            calls.append(now)
            return True

    def reset_at(self, item: RateLimitItem, key: str) -> float:
        """When the oldest call in the window leaves it."""
        now = self.clock()
        with self._lock:
            calls = self._window(key, item.get_expiry(), now)
            return calls[0] + item.get_expiry() if calls else now


class SharedWindows:
    """Moving windows in a shared storage (Redis), through the `limits` package."""

    def __init__(self, uri: str):
        self.strategy = MovingWindowRateLimiter(storage_from_string(uri))

    def hit(self, item: RateLimitItem, key: str) -> bool:
        return self.strategy.hit(item, key)

    def reset_at(self, item: RateLimitItem, key: str) -> float:
        return self.strategy.get_window_stats(item, key).reset_time


def _too_many(windows, item: RateLimitItem, scope: str, key: str) -> ApiError:
    """429, with a Retry-After in whole seconds."""
    wait = max(1, math.ceil(windows.reset_at(item, key) - time.time()))
    what = "runs started" if scope == RUN_SCOPE else "requests"
    return ApiError(
        429, f"Too many {what}: at most {item} per user; try again in {wait} s.", headers={"Retry-After": str(wait)}
    )


def init_app(app: Flask, settings: Settings) -> None:
    """Authenticate API calls first, then count them per user; answer a breach with 429."""
    every_call = parse_many(settings.ratelimit_default) if settings.ratelimit_default else []
    run_starts = parse_many(settings.ratelimit_runs) if settings.ratelimit_runs else []
    if not every_call and not run_starts:
        return  # both "off": no counting, no storage
    uri = settings.ratelimit_storage_uri
    windows = MemoryWindows() if uri.startswith("memory://") else SharedWindows(uri)
    app.extensions["ratelimit"] = windows

    @app.before_request
    def authenticate_and_count():
        # App hooks run before blueprint hooks: the user is known before anything is counted.
        if not _is_api_call():
            return None
        user = authenticate(settings)
        limits = [(API_SCOPE, item) for item in every_call]
        if run_starts and _starts_run():
            limits += [(RUN_SCOPE, item) for item in run_starts]
        for scope, item in limits:
            key = item.key_for(KEY_PREFIX, scope, f"user:{user}")
            if not windows.hit(item, key):
                raise _too_many(windows, item, scope, key)
        return None

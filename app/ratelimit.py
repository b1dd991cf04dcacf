"""Per-user rate limits: one on starting runs, one on every API call (moving windows).

The key is the authenticated user, so the caller is authenticated before any
limit is counted: a call without valid credentials gets its 401 and spends no
one's budget. Health checks, the OpenAPI document and CORS preflights are not
limited. With `memory://` (the default) the counts are this machine's: in a
SQLite file that every worker of one gunicorn master shares (gunicorn.conf.py
names it in RATELIMIT_SHARED_FILE), or in this process's memory without gunicorn.
With a Redis URL (`RATELIMIT_STORAGE_URI`) several instances share them (through
the `limits` package, as Flask-Limiter would); every call to Redis is bounded by
RATELIMIT_STORAGE_TIMEOUT_SECONDS, and when Redis fails the request passes with a
warning (RATELIMIT_FAIL=open) or gets a 503 (closed).

One before_request hook does it all; in memory a user's window is a deque of the
instants of their calls. (Flask-Limiter cost about 0.1 ms on every request, limited
or not, and its memory storage started a timer thread every 10 ms under load.)
"""

from __future__ import annotations

import logging
import math
import sqlite3
import threading
import time
from collections import deque

from flask import Flask, current_app, request
from limits import RateLimitItem, parse_many
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter
from redis.backoff import NoBackoff
from redis.retry import Retry

from app import metrics
from app.auth import authenticate
from app.errors import ApiError
from app.settings import Settings

log = logging.getLogger("app.ratelimit")

RUN_SCOPE = "runs"
API_SCOPE = "api"
KEY_PREFIX = "assistants-backend"
API_PREFIXES = ("/api/", "/v1/")
_STARTS_RUN = "_rate_limited_as_run"
# After a failed call, the shared store is not asked again for this long: a dead store costs
# each request nothing, and a paused one no timeout each.
STORE_RETRY_SECONDS = 1.0
# At most one warning per this many seconds while the store fails.
WARN_EVERY_SECONDS = 10.0
STORE_RETRY_AFTER_SECONDS = 2


class StoreUnavailable(Exception):
    """The shared rate-limit store did not answer in time, or failed."""


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


class _OneByOne:
    """`hit_all` as one `hit` after another."""

    def hit_all(self, hits: list[tuple[RateLimitItem, str]]) -> int | None:
        """Count each (limit, key) in turn; the index of the first one refused (the rest not
        counted), or None when every one was allowed."""
        for index, (item, key) in enumerate(hits):
            if not self.hit(item, key):
                return index
        return None


class MemoryWindows(_OneByOne):
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


class FileWindows:
    """Moving windows in a SQLite file shared by the workers of one machine (one gunicorn master):
    each call is counted in one short write transaction, so a limit holds across the workers."""

    def __init__(self, path: str, longest_expiry: float, clock=time.time):
        self.path = path
        self.longest_expiry = longest_expiry
        self.clock = clock
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._hits = 0

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            # A transaction here takes microseconds: a second's wait for the lock means a stuck worker,
            # and the wait blocks a gevent worker whole, so it ends as a store failure (RATELIMIT_FAIL).
            conn = sqlite3.connect(self.path, timeout=1, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=OFF")  # counters, not records: a crash may lose the last ones
            conn.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT NOT NULL, at REAL NOT NULL)")
            conn.execute("CREATE INDEX IF NOT EXISTS calls_by_key ON calls (key, at)")
            self._conn = conn
        return self._conn

    def hit(self, item: RateLimitItem, key: str) -> bool:
        return self.hit_all([(item, key)]) is None

    def hit_all(self, hits: list[tuple[RateLimitItem, str]]) -> int | None:
        """Count each (limit, key) in turn, all in one transaction (a request's limits cost one);
        the index of the first one refused (the rest not counted), or None."""
        try:
            return self._hit_all(hits)
        except sqlite3.Error as exc:
            self._conn = None  # opened afresh next time
            raise StoreUnavailable(f"the shared counters file failed: {exc}") from exc

    def _hit_all(self, hits: list[tuple[RateLimitItem, str]]) -> int | None:
        now = self.clock()
        refused = None
        with self._lock:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._hits += 1
                if self._hits % 1000 == 0:  # windows of users who have gone quiet
                    conn.execute("DELETE FROM calls WHERE at < ?", (now - self.longest_expiry,))
                for index, (item, key) in enumerate(hits):
                    conn.execute("DELETE FROM calls WHERE key = ? AND at < ?", (key, now - item.get_expiry()))
                    (count,) = conn.execute("SELECT count(*) FROM calls WHERE key = ?", (key,)).fetchone()
                    if count >= item.amount:
                        refused = index
                        break
                    conn.execute("INSERT INTO calls (key, at) VALUES (?, ?)", (key, now))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return refused

    def reset_at(self, item: RateLimitItem, key: str) -> float:
        """When the oldest call in the window leaves it."""
        now = self.clock()
        try:
            with self._lock:
                (oldest,) = (
                    self._connection()
                    .execute("SELECT min(at) FROM calls WHERE key = ? AND at >= ?", (key, now - item.get_expiry()))
                    .fetchone()
                )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"the shared counters file failed: {exc}") from exc
        return oldest + item.get_expiry() if oldest is not None else now


class SharedWindows(_OneByOne):
    """Moving windows in a shared storage (Redis), through the `limits` package; every call bounded.

    A failure raises StoreUnavailable, and for STORE_RETRY_SECONDS after it the store is not asked."""

    def __init__(self, uri: str, timeout: float, clock=time.monotonic):
        storage = storage_from_string(
            uri,
            wrap_exceptions=True,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            retry=Retry(NoBackoff(), 0),  # one try: the caller decides, within its bound
        )
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self.clock = clock
        self._down_until = 0.0

    def _ask(self, question):
        if self.clock() < self._down_until:
            raise StoreUnavailable("the rate-limit store failed less than a second ago")
        try:
            return question()
        except Exception as exc:  # any failure of the store (refused, timed out, reset, a Redis error)
            self._down_until = self.clock() + STORE_RETRY_SECONDS
            raise StoreUnavailable(f"{exc.__class__.__name__}: {exc}") from exc

    def hit(self, item: RateLimitItem, key: str) -> bool:
        return self._ask(lambda: self.strategy.hit(item, key))

    def reset_at(self, item: RateLimitItem, key: str) -> float:
        return self._ask(lambda: self.strategy.get_window_stats(item, key).reset_time)

    def close(self) -> None:
        """Close the connections to the store."""
        self.storage.get_connection().close()

    def problem(self) -> str | None:
        """Why the store does not answer a ping now, or None; a good answer ends the pause after a failure."""
        try:
            if not self.storage.get_connection().ping():
                return "the rate-limit store does not answer"
        except Exception as exc:  # refused, timed out, or any Redis error
            return f"the rate-limit store does not answer ({exc.__class__.__name__})"
        self._down_until = 0.0
        return None


class FailurePolicy:
    """What a request gets when the shared store fails: passed with a warning ("open") or a 503 ("closed")."""

    def __init__(self, fail: str, clock=time.monotonic):
        self.fail = fail
        self.clock = clock
        self._warned_at: float | None = None
        self._unwarned = 0

    def store_failed(self, error: StoreUnavailable) -> None:
        """Count and log the failure (one line per WARN_EVERY_SECONDS); raise the 503 when closed."""
        outcome = "refused" if self.fail == "closed" else "passed"
        metrics.ratelimit_store_error(outcome)
        now = self.clock()
        if self._warned_at is None or now - self._warned_at >= WARN_EVERY_SECONDS:
            also = f" ({self._unwarned} more since the last warning)" if self._unwarned else ""
            action = "refusing API calls (503)" if self.fail == "closed" else "letting API calls through unlimited"
            log.warning("rate-limit store unavailable: %s; RATELIMIT_FAIL=%s: %s%s", error, self.fail, action, also)
            self._warned_at, self._unwarned = now, 0
        else:
            self._unwarned += 1
        if self.fail == "closed":
            raise ApiError(
                503,
                "The rate-limit store is unavailable; try again later.",
                headers={"Retry-After": str(STORE_RETRY_AFTER_SECONDS)},
            )


def _too_many(windows, item: RateLimitItem, scope: str, key: str) -> ApiError:
    """429, with a Retry-After in whole seconds."""
    try:
        reset_at = windows.reset_at(item, key)
    except StoreUnavailable:
        reset_at = time.time() + item.get_expiry()
    wait = max(1, math.ceil(reset_at - time.time()))
    what = "runs started" if scope == RUN_SCOPE else "requests"
    return ApiError(
        429, f"Too many {what}: at most {item} per user; try again in {wait} s.", headers={"Retry-After": str(wait)}
    )


def _windows(settings: Settings, items: list[RateLimitItem]):
    """Where the counts live: Redis, a file shared by this machine's workers, or this process."""
    uri = settings.ratelimit_storage_uri
    if not uri.startswith("memory://"):
        return SharedWindows(uri, settings.ratelimit_storage_timeout_seconds)
    if settings.ratelimit_shared_file:
        return FileWindows(settings.ratelimit_shared_file, max(item.get_expiry() for item in items))
    return MemoryWindows()


def init_app(app: Flask, settings: Settings) -> None:
    """Authenticate API calls first, then count them per user; answer a breach with 429."""
    every_call = parse_many(settings.ratelimit_default) if settings.ratelimit_default else []
    run_starts = parse_many(settings.ratelimit_runs) if settings.ratelimit_runs else []
    if not every_call and not run_starts:
        return  # both "off": no counting, no storage
    windows = _windows(settings, every_call + run_starts)
    policy = FailurePolicy(settings.ratelimit_fail)
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
        hits = [(item, item.key_for(KEY_PREFIX, scope, f"user:{user}")) for scope, item in limits]
        try:
            refused = windows.hit_all(hits)
        except StoreUnavailable as error:
            policy.store_failed(error)  # raises the 503 when failing closed
            return None  # failing open: this request is not counted anywhere
        if refused is not None:
            item, key = hits[refused]
            raise _too_many(windows, item, limits[refused][0], key)
        return None


def store_problem(app: Flask) -> str | None:
    """Why the shared rate-limit store does not answer now, or None (also when there is none)."""
    windows = app.extensions.get("ratelimit")
    return windows.problem() if isinstance(windows, SharedWindows) else None

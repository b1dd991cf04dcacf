"""`/healthz` (the process serves) and `/readyz` (every dependency this process needs can be used now).

Readiness asks the database for a write (rolled back) and the shared rate-limit store
(Redis) for a ping, and keeps the answer for READY_CACHE_SECONDS, so that a storm of
probes costs the database one write per process and period. It recovers by itself:
the next check after the dependency is back answers 200.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, current_app, jsonify

from app import metrics, ratelimit
from app.api import services
from app.store import schema
from app.store.guard import file_problem, sqlite_path, write_problem

bp = Blueprint("health", __name__)
log = logging.getLogger("app.health")

READY_CACHE_SECONDS = 1.5
_CACHE_KEY = "readiness"


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


def _database_problem(b) -> str | None:
    """Why the database cannot be used now, or None."""
    path = sqlite_path(b.records.db)
    problem = file_problem(path) if path else None
    if problem:
        return problem
    try:
        if not schema.is_current(b.records.db):
            log.warning("readiness: the database schema is behind; run `%s`", schema.MIGRATE_COMMAND)
            return "the database schema is not up to date"
    except Exception as exc:  # any failure to read means "not ready"
        return f"the database does not answer ({exc.__class__.__name__})"
    return write_problem(b.records.db)


class Readiness:
    """The last readiness answer of this process, and when it was made."""

    def __init__(self):
        self.lock = threading.Lock()
        self.checked_at = float("-inf")
        self.failing: dict[str, str] = {}
        self.degraded: dict[str, str] = {}

    def check(self, b) -> None:
        """Ask every dependency again, unless the last answer is recent."""
        with self.lock:
            if time.monotonic() - self.checked_at < READY_CACHE_SECONDS:
                return
            store = ratelimit.store_problem(current_app)
            # Failing open, the instance still serves (without limits): reported, but ready.
            closed = b.settings.ratelimit_fail == "closed"
            failing = {"database": _database_problem(b), "ratelimit": store if closed else None}
            self.failing = {name: why for name, why in failing.items() if why}
            self.degraded = {"ratelimit": f"{store}; failing open"} if store and not closed else {}
            self.checked_at = time.monotonic()
            for name, why in self.failing.items():
                metrics.not_ready(name)
                log.warning("readiness: %s: %s", name, why)
            for name, why in self.degraded.items():
                log.warning("readiness: %s degraded: %s", name, why)


@bp.get("/readyz")
def readyz():
    b = services()
    readiness = current_app.extensions.setdefault(_CACHE_KEY, Readiness())
    readiness.check(b)
    if readiness.failing:
        error = "Not ready: " + "; ".join(readiness.failing.values()) + "."
        return jsonify(status="unavailable", error=error, failing=readiness.failing), 503
    body = dict(status="ok", engine=b.settings.engine, offline=b.settings.offline)
    if readiness.degraded:
        body["degraded"] = readiness.degraded
    return jsonify(body)

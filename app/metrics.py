"""Prometheus metrics of the runs this backend waits for, served at `GET /metrics`.

Under gunicorn, `gunicorn.conf.py` sets PROMETHEUS_MULTIPROC_DIR before any
worker starts, so every worker writes its numbers to files there and each
scrape adds them all up (also those of workers that have exited, so counters
never go back after a reload). Without it, the numbers are this process's own.
"""

from __future__ import annotations

import os

from flask import Blueprint, Flask, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from app.contract import (
    UpstreamBusy,
    UpstreamConfigError,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTransient,
)

RUNS = Counter("backend_runs", "Runs waited for, by final status ('timeout': the deadline passed)", ["status"])
WAIT_SECONDS = Histogram(
    "backend_run_wait_seconds",
    "Seconds a POST .../runs waited for its run",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 45, 60, 90, 120, 300),
)
POLLS = Histogram("backend_run_polls", "Upstream polls per run", buckets=(1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144))
IN_FLIGHT = Gauge("backend_runs_in_flight", "Runs being waited for now", multiprocess_mode="livesum")
UPSTREAM_ERRORS = Counter("backend_upstream_errors", "Upstream errors, by kind", ["kind"])
STORAGE_ERRORS = Counter("backend_storage_errors", "Requests answered 503 because the database failed")
RATELIMIT_STORE_ERRORS = Counter(
    "backend_ratelimit_store_errors",
    "Rate-limit checks the shared store (Redis) did not answer, by outcome ('passed': failing open, 'refused': closed)",
    ["outcome"],
)
EVENT_LOG_ERRORS = Counter(
    "backend_event_log_errors",
    "Calls to the shared event log (Redis) that failed, by operation ('publish': a run's events, 'read': a reattach)",
    ["operation"],
)
NOT_READY = Counter("backend_not_ready", "Readiness checks that failed, by failing dependency", ["dependency"])
TOKENS = Counter(
    "backend_tokens",
    "Tokens the upstream reported, by assistant type, model and kind (input, cached, output, reasoning, total)",
    ["assistant_type", "model", "kind"],
)
BUDGET_REFUSALS = Counter(
    "backend_budget_refusals",
    "Runs refused because a usage budget was used up, by type and budget",
    ["assistant_type", "budget"],
)

# Most specific first: the first class an error is an instance of names its kind.
_KINDS = (
    (UpstreamTransient, "transient"),
    (UpstreamConfigError, "config"),
    (UpstreamNotFound, "not_found"),
    (UpstreamBusy, "busy"),
    (UpstreamRejected, "rejected"),
)

bp = Blueprint("metrics", __name__)


def run_started() -> None:
    """A run is now being waited for."""
    IN_FLIGHT.inc()


def run_ended() -> None:
    """A run is no longer being waited for, however its wait ended."""
    IN_FLIGHT.dec()


# Labelled children made once, by metric and labels: `labels` takes a lock and checks its arguments.
_children: dict[tuple, Counter] = {}


def _child(metric: Counter, *labels: str) -> Counter:
    child = _children.get((metric, labels))
    if child is None:
        child = _children[(metric, labels)] = metric.labels(*labels)
    return child


def run_finished(result) -> None:
    """Count a finished wait (a `waiting.WaitResult`): its status, time, polls and absorbed errors."""
    _child(RUNS, "timeout" if result.timed_out else result.run["status"]).inc()
    WAIT_SECONDS.observe(result.waited)
    POLLS.observe(result.polls)
    if result.transient_errors:
        UPSTREAM_ERRORS.labels("transient").inc(result.transient_errors)


def storage_error() -> None:
    """A request was answered 503 because the database failed."""
    STORAGE_ERRORS.inc()


def ratelimit_store_error(outcome: str) -> None:
    """A rate-limit check went without the shared store: the request 'passed' or was 'refused'."""
    RATELIMIT_STORE_ERRORS.labels(outcome).inc()


def event_log_error(operation: str) -> None:
    """A call to the shared event log failed: publishing a run's events, or reading them."""
    EVENT_LOG_ERRORS.labels(operation).inc()


def not_ready(dependency: str) -> None:
    """A readiness check found `dependency` failing."""
    NOT_READY.labels(dependency).inc()


def tokens_used(assistant_type: str, model: str, tokens: dict[str, int]) -> None:
    """Count the tokens of one recorded upstream run, by kind (`input_tokens` -> "input")."""
    for field, count in tokens.items():
        counter = _child(TOKENS, assistant_type, model, field.removesuffix("_tokens"))  # every kind shows, 0 too
        if count:  # each increment is a locked write to the worker's metrics file
            counter.inc(count)


def budget_refused(assistant_type: str, budget: str) -> None:
    """Count a run refused by a used-up budget."""
    BUDGET_REFUSALS.labels(assistant_type, budget).inc()


def upstream_error(error: UpstreamError) -> None:
    """Count an upstream error that reached a view."""
    kind = next((name for cls, name in _KINDS if isinstance(error, cls)), "other")
    UPSTREAM_ERRORS.labels(kind).inc()


@bp.get("/metrics")
def metrics():
    """Every metric in the Prometheus text format."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


def init_app(app: Flask) -> None:
    """Serve /metrics and count the upstream errors that the error handler answers.

    Call it after `errors.init_app`: it wraps that handler rather than adding a
    second place that decides how an upstream error is answered.
    """
    answer = app.error_handler_spec[None][None].get(UpstreamError)
    if answer is None:
        raise RuntimeError("metrics.init_app must come after errors.init_app")

    def counted(error: UpstreamError):
        upstream_error(error)
        return answer(error)

    app.register_error_handler(UpstreamError, counted)
    app.register_blueprint(bp)

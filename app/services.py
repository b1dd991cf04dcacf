"""The per-process services the views share: settings, upstream engine, record, poll schedule, capacity."""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace

from app.engines.assistants import AssistantsEngine
from app.engines.base import Engine
from app.engines.client import make_client, offline_transport
from app.engines.responses import ResponsesEngine
from app.engines.upstream_http import make_upstream
from app.runs.polling import LookBudget, PollSchedule
from app.settings import Settings
from app.store.db import make_database
from app.store.records import Records


def make_upstream_engine(settings: Settings) -> Engine:
    """The configured upstream engine; runs on the Responses API go through the lean client."""
    offline = offline_transport() if settings.offline else None
    if settings.engine == "responses":
        return ResponsesEngine(make_client(settings, offline), make_upstream(settings, offline))
    return AssistantsEngine(make_client(settings, offline))


class Capacity:
    """Counts the runs this process is waiting for, up to a limit (0: none)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.inflight = 0
        self._lock = threading.Lock()

    def try_take(self) -> bool:
        with self._lock:
            if self.limit and self.inflight >= self.limit:
                return False
            self.inflight += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.inflight -= 1


@dataclass
class Services:
    """What a request needs beyond itself; one per process."""

    settings: Settings
    engine: Engine
    records: Records
    schedule: PollSchedule
    capacity: Capacity


def build_services(settings: Settings) -> Services:
    """Wire the engine, the database and the wait strategy from the settings."""
    if settings.wait_strategy == "fixed":
        schedule = PollSchedule.fixed(1000)
    else:
        schedule = PollSchedule(first_ms=settings.poll_first_ms, max_ms=settings.poll_max_ms)
    if settings.poll_budget:
        schedule = replace(schedule, pace=LookBudget(settings.poll_budget).delay)
    return Services(
        settings=settings,
        engine=make_upstream_engine(settings),
        records=Records(make_database(settings.database_url)),
        schedule=schedule,
        capacity=Capacity(settings.max_inflight_runs),
    )

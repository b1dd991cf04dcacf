"""The shared log of streamed runs' events, which a client that lost its stream reads again.

Each event is kept under its run with its sequence number (the SSE `id:`), its name and
its data line, for STREAM_REPLAY_SECONDS after the run's stream ended. Two engines:

- `MemoryEventLog`: this process only (the default): a bounded deque per run, followers
  woken by a condition of their run.
- `RedisEventLog` (EVENT_LOG_URL=redis://...): a Redis Stream per run, shared by every
  instance. Entry IDs are `0-<seq>`, so "after id N" is a plain XREAD from `0-N`; each
  XADD trims the stream to MAX_EVENTS_PER_RUN and renews the key's expiry. Every call is
  bounded by EVENT_LOG_TIMEOUT_SECONDS (a follower's blocking read by its wait on top),
  and any failure is an `EventLogUnavailable`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from app.settings import Settings

KEY_PREFIX = "assistants-backend:run-events"
MAX_EVENTS_PER_RUN = 10_000  # a reply of several thousand words, a delta each
MAX_RUNS_IN_MEMORY = 1_000  # runs whose events this process keeps at once (memory://); the earliest to expire go first
READ_BATCH = 500
EXTENSION_KEY = "event_log"


@dataclass(frozen=True)
class LoggedEvent:
    """One event of a run: its sequence number, its SSE name and its data line as sent."""

    seq: int
    name: str
    data: str

    def frame(self) -> str:
        """The server-sent event, with its `id:`."""
        return f"id: {self.seq}\nevent: {self.name}\ndata: {self.data}\n\n"


@dataclass(frozen=True)
class Stream:
    """Who may read a run's events: the run's owner, on the run's thread."""

    owner: str
    thread_id: str


class EventLogUnavailable(Exception):
    """The shared event log (Redis) did not answer in time, or failed."""


class _RunLog:
    def __init__(self, stream: Stream, lock: threading.Lock, max_events: int):
        self.stream = stream
        self.events: deque[LoggedEvent] = deque(maxlen=max_events)
        self.expires_at = 0.0
        self.changed = threading.Condition(lock)


class MemoryEventLog:
    """The events of this process's streamed runs, in memory, bounded per run and in number of runs."""

    def __init__(
        self,
        replay_seconds: float,
        live_seconds: float,
        max_events: int = MAX_EVENTS_PER_RUN,
        max_runs: int = MAX_RUNS_IN_MEMORY,
        clock=time.monotonic,
    ):
        self.replay_seconds = replay_seconds
        self.live_seconds = live_seconds
        self.max_events = max_events
        self.max_runs = max_runs
        self.clock = clock
        self._lock = threading.Lock()
        self._runs: dict[str, _RunLog] = {}

    def _live(self, run_id: str) -> _RunLog | None:
        log = self._runs.get(run_id)
        if log is not None and log.expires_at <= self.clock():
            del self._runs[run_id]
            return None
        return log

    def _make_room(self) -> None:
        now = self.clock()
        for run_id in [r for r, log in self._runs.items() if log.expires_at <= now]:
            del self._runs[run_id]
        while len(self._runs) >= self.max_runs:
            del self._runs[min(self._runs, key=lambda r: self._runs[r].expires_at)]

    def last_seq(self, run_id: str) -> int:
        """The sequence number of the run's last event kept, or 0."""
        with self._lock:
            log = self._live(run_id)
            return log.events[-1].seq if log is not None and log.events else 0

    def append(self, run_id: str, stream: Stream, events: list[LoggedEvent]) -> None:
        """Keep `events` (in order) and wake the run's followers."""
        with self._lock:
            log = self._live(run_id)
            if log is None:
                self._make_room()
                log = self._runs[run_id] = _RunLog(stream, self._lock, self.max_events)
            log.events.extend(events)
            ended = events[-1].name == "done"
            log.expires_at = self.clock() + (self.replay_seconds if ended else self.live_seconds)
            log.changed.notify_all()

    def stream(self, run_id: str) -> Stream | None:
        """Who may read the run's events, or None when none are kept (never, or expired)."""
        with self._lock:
            log = self._live(run_id)
            return log.stream if log is not None else None

    def read(self, run_id: str, after: int, wait: float = 0.0) -> list[LoggedEvent]:
        """The events after `after`, waiting up to `wait` seconds for one; [] when none came."""
        deadline = self.clock() + wait
        with self._lock:
            while True:
                log = self._live(run_id)
                if log is not None and log.events and log.events[-1].seq > after:
                    return [e for e in log.events if e.seq > after][:READ_BATCH]
                left = deadline - self.clock()
                if log is None or left <= 0:
                    return []
                log.changed.wait(left)

    def close(self) -> None:
        """Nothing to close."""


class RedisEventLog:
    """The events of every instance's streamed runs, one Redis Stream per run."""

    def __init__(self, url: str, replay_seconds: float, live_seconds: float, timeout: float):
        self.replay_seconds = replay_seconds
        self.live_seconds = live_seconds
        self.timeout = timeout
        options = {"socket_connect_timeout": timeout, "retry": Retry(NoBackoff(), 0), "decode_responses": True}
        self.redis = redis.Redis.from_url(url, socket_timeout=timeout, **options)
        self._url, self._options = url, options
        self._followers: dict[float, redis.Redis] = {}  # by wait: a blocking read needs a longer socket timeout

    @staticmethod
    def _key(run_id: str) -> str:
        return f"{KEY_PREFIX}:{run_id}"

    def _call(self, question):
        try:
            return question()
        except Exception as exc:  # refused, timed out, reset, or any Redis error
            raise EventLogUnavailable(f"{exc.__class__.__name__}: {exc}") from exc

    def last_seq(self, run_id: str) -> int:
        """The sequence number of the run's last event kept, or 0."""
        last = self._call(lambda: self.redis.xrevrange(self._key(run_id), count=1))
        return _seq(last[0][0]) if last else 0

    def append(self, run_id: str, stream: Stream, events: list[LoggedEvent]) -> None:
        """XADD the events (IDs `0-<seq>`, trimmed), the stream's reader kept beside, both expiring."""
        key = self._key(run_id)
        ttl = max(1, round(self.replay_seconds if events[-1].name == "done" else self.live_seconds))
        pipe = self.redis.pipeline(transaction=False)
        pipe.hset(f"{key}:reader", mapping={"owner": stream.owner, "thread_id": stream.thread_id})
        for event in events:
            fields = {"name": event.name, "data": event.data}
            pipe.xadd(key, fields, id=f"0-{event.seq}", maxlen=MAX_EVENTS_PER_RUN, approximate=True)
        pipe.expire(key, ttl)
        pipe.expire(f"{key}:reader", ttl)
        self._call(pipe.execute)

    def stream(self, run_id: str) -> Stream | None:
        """Who may read the run's events, or None when none are kept (never, or expired)."""
        owner, thread_id = self._call(lambda: self.redis.hmget(f"{self._key(run_id)}:reader", "owner", "thread_id"))
        return Stream(owner, thread_id) if owner and thread_id else None

    def read(self, run_id: str, after: int, wait: float = 0.0) -> list[LoggedEvent]:
        """The events after `after`, waiting up to `wait` seconds for one (XREAD BLOCK); [] when none came."""
        key, start = self._key(run_id), f"0-{after}"
        if wait <= 0:
            entries = self._call(lambda: self.redis.xrange(key, min=f"({start}", count=READ_BATCH))
        else:
            follower = self._follower(wait)
            answer = self._call(lambda: follower.xread({key: start}, count=READ_BATCH, block=int(wait * 1000)))
            entries = answer[0][1] if answer else []
        return [LoggedEvent(_seq(entry_id), fields["name"], fields["data"]) for entry_id, fields in entries]

    def _follower(self, wait: float) -> redis.Redis:
        if wait not in self._followers:
            self._followers[wait] = redis.Redis.from_url(self._url, socket_timeout=self.timeout + wait, **self._options)
        return self._followers[wait]

    def close(self) -> None:
        """Close the connections to Redis."""
        for client in (self.redis, *self._followers.values()):
            client.close()

    def problem(self) -> str | None:
        """Why Redis does not answer a ping now, or None."""
        try:
            self.redis.ping()
        except Exception as exc:  # refused, timed out, or any Redis error
            return f"the event log does not answer ({exc.__class__.__name__})"
        return None


def _seq(entry_id: str) -> int:
    return int(entry_id.partition("-")[2])


def make_event_log(settings: Settings, live_seconds: float) -> MemoryEventLog | RedisEventLog:
    """The configured log; `live_seconds` bounds how long a run's events are kept while it streams."""
    replay = settings.stream_replay_seconds
    if settings.event_log_url.startswith("memory://"):
        return MemoryEventLog(replay, live_seconds + replay)
    return RedisEventLog(settings.event_log_url, replay, live_seconds + replay, settings.event_log_timeout_seconds)

"""The environment variables this project reads, each with its default and parser, written once.

Settings, gunicorn.conf.py, deploy/nginx_site.py and app.store.migrate all read their
variables through these. Standard library only and nothing from the app:
gunicorn.conf.py loads this file by path, without the app package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# After a cancel, how long to wait for the upstream to confirm it, so that the
# thread takes the next message. Part of the timeout chain: gunicorn's
# graceful_timeout covers RUN_TIMEOUT_SECONDS plus this.
CANCEL_GRACE_SECONDS = 5.0


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


def text(env, name: str, default: str | None = None) -> str | None:
    """The variable's value, stripped; `default` when unset or blank."""
    value = (env.get(name) or "").strip()
    return value if value else default


@dataclass(frozen=True)
class Number:
    """A numeric variable within [low, high]."""

    name: str
    default: Any
    kind: type = float
    low: float | None = None
    high: float | None = None

    def read(self, env, default: Any = None) -> Any:
        """The value in `env`; the default (or `default`, when the default depends on others) if unset."""
        raw = text(env, self.name)
        if raw is None:
            return self.default if default is None else default
        try:
            value = self.kind(raw)
        except ValueError:
            whole = "whole " if self.kind is int else ""
            raise ConfigError(f"{self.name}: expected a {whole}number, got {raw!r}") from None
        if self.high is None and self.low is not None and value < self.low:
            raise ConfigError(f"{self.name}: expected a number of at least {self.low}, got {raw!r}")
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ConfigError(f"{self.name}: {raw} is outside {self.low}..{self.high}")
        return value


@dataclass(frozen=True)
class Flag:
    """A true/false variable."""

    name: str
    default: bool

    def read(self, env) -> bool:
        raw = text(env, self.name)
        if raw is None:
            return self.default
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{self.name}: expected true or false, got {raw!r}")


@dataclass(frozen=True)
class Choice:
    """One of a few words, case-insensitive; read as lower case."""

    name: str
    default: str
    choices: tuple[str, ...]

    def read(self, env) -> str:
        value = text(env, self.name, self.default).lower()
        if value not in self.choices:
            raise ConfigError(f"{self.name}: expected one of {', '.join(self.choices)}, got {value!r}")
        return value


@dataclass(frozen=True)
class Text:
    """Free text."""

    name: str
    default: str | None = None

    def read(self, env) -> str | None:
        return text(env, self.name, self.default)


# OPENAI_BASE_URL's value for the built-in offline upstream, which lives in the process.
OFFLINE = "offline"
OPENAI_BASE_URL = Text("OPENAI_BASE_URL")
OPENAI_ENGINE = Choice("OPENAI_ENGINE", "responses", ("responses", "assistants"))
RUN_TIMEOUT_SECONDS = Number("RUN_TIMEOUT_SECONDS", 60.0, low=1, high=3600)
RUN_CANCEL_ON_TIMEOUT = Flag("RUN_CANCEL_ON_TIMEOUT", True)
WAIT_STRATEGY = Choice("WAIT_STRATEGY", "poll", ("poll", "fixed", "stream"))
POLL_FIRST_MS = Number("POLL_FIRST_MS", 500, int, low=1, high=60_000)
POLL_MAX_MS = Number("POLL_MAX_MS", 1000, int, low=1, high=60_000)
# Looks at waiting runs per second per process (app/runs/polling.py); 0: no budget. Measured: docs/benchmarks.md.
POLL_BUDGET = Number("POLL_BUDGET", 1200, int, low=0, high=1_000_000)
# Its default, min(10, RUN_TIMEOUT_SECONDS / 2), depends on the deadline: see Settings.
UPSTREAM_TIMEOUT_SECONDS = Number("UPSTREAM_TIMEOUT_SECONDS", 10.0, low=0.1)
# Model turns of one run that may end in calls of server tools (the OpenAI Agents SDK's default).
TOOL_MAX_ROUNDS = Number("TOOL_MAX_ROUNDS", 10, int, low=1, high=100)
# How long a run that asks the client for tool outputs waits for them (as long as Assistants runs wait).
TOOL_OUTPUTS_TIMEOUT_SECONDS = Number("TOOL_OUTPUTS_TIMEOUT_SECONDS", 600.0, low=1, high=3600)
AUTH_MODE = Choice("AUTH_MODE", "token", ("none", "token", "jwt"))
JWT_ALGORITHMS = Text("JWT_ALGORITHMS", "HS256")
DATABASE_URL = Text("DATABASE_URL", "sqlite:///instance/backend.db")
DATABASE_AUTO_MIGRATE = Flag("DATABASE_AUTO_MIGRATE", True)
CORS_ORIGINS = Text("CORS_ORIGINS", "http://localhost:8080")
MAX_BODY_BYTES = Number("MAX_BODY_BYTES", 1_048_576, int, low=1024, high=100 * 1_048_576)
# An uploaded file's size limit; OpenAI's own is 512 MB per file. Uploads are the only bodies
# above MAX_BODY_BYTES the backend reads, and it stops reading at this limit.
FILE_MAX_BYTES = Number("FILE_MAX_BYTES", 20 * 1_048_576, int, low=1, high=512 * 1_048_576)
# Comma-separated user IDs (token-mode user names or JWT `sub`) that may change assistant types.
ADMIN_USERS = Text("ADMIN_USERS", "")
# Whether GET .../assistants shows the types' instructions to every caller.
ASSISTANT_INSTRUCTIONS_VISIBLE = Flag("ASSISTANT_INSTRUCTIONS_VISIBLE", False)
MAX_MESSAGE_CHARS = Number("MAX_MESSAGE_CHARS", 32_768, int, low=1, high=1_048_576)
# 0: no limit of its own; under gunicorn the default comes from WORKER_THREADS or
# WORKER_CONNECTIONS, which gunicorn.conf.py exports (see Settings).
MAX_INFLIGHT_RUNS = Number("MAX_INFLIGHT_RUNS", 0, int, low=0, high=1_000_000)
WORKER_THREADS = Number("WORKER_THREADS", 0, int, low=0, high=100_000)
WORKER_CONNECTIONS = Number("WORKER_CONNECTIONS", 0, int, low=0, high=100_000)
FORWARDED_PROXIES = Number("FORWARDED_PROXIES", 0, int, low=0, high=10)
LOG_LEVEL = Choice("LOG_LEVEL", "info", ("debug", "info", "warning", "error"))
LOG_FORMAT = Choice("LOG_FORMAT", "text", ("text", "json"))
RATELIMIT_RUNS = Text("RATELIMIT_RUNS", "30/minute")
RATELIMIT_DEFAULT = Text("RATELIMIT_DEFAULT", "600/minute")
RATELIMIT_STORAGE_URI = Text("RATELIMIT_STORAGE_URI", "memory://")
# What a request gets when the shared store (Redis) does not answer: "open" passes it, "closed" a 503.
RATELIMIT_FAIL = Choice("RATELIMIT_FAIL", "open", ("open", "closed"))
# The longest a call to the shared store may take (connect, then each read) before it counts as failed.
RATELIMIT_STORAGE_TIMEOUT_SECONDS = Number("RATELIMIT_STORAGE_TIMEOUT_SECONDS", 0.3, low=0.01, high=10)
# With memory://, the counters of the workers of one gunicorn master: a SQLite file that gunicorn.conf.py names.
RATELIMIT_SHARED_FILE = Text("RATELIMIT_SHARED_FILE")
# Where the events of streamed runs are kept for clients that reattach (app/event_log.py): memory:// (this
# process) or a redis:// URL shared by instances; unset: RATELIMIT_STORAGE_URI's Redis if it names one.
EVENT_LOG_URL = Text("EVENT_LOG_URL")
# How long a streamed run's events can be replayed after the run's stream ended.
STREAM_REPLAY_SECONDS = Number("STREAM_REPLAY_SECONDS", 300.0, low=0, high=86400)
# The longest one call to the event log's Redis may take (connect, then each read).
EVENT_LOG_TIMEOUT_SECONDS = Number("EVENT_LOG_TIMEOUT_SECONDS", 0.3, low=0.01, high=10)
# What ASSISTANT_<TYPE>_ALLOW_OVERRIDES may name: run body fields a type lets its clients set.
OVERRIDABLE = ("instructions", "model")
# The chat page at `/`; off unless enabled (`make run` turns it on: scripts/dev_env.py).
CHAT_PAGE = Flag("CHAT_PAGE", False)

# gunicorn.conf.py and deploy/nginx_site.py: where gunicorn listens, and its workers.
HOST = Text("HOST", "127.0.0.1")
PORT = Number("PORT", 3000, int, low=1)
# Its default covers the longest request: see gunicorn.conf.py.
GRACEFUL_TIMEOUT = Number("GRACEFUL_TIMEOUT", None, int, low=1)
WEB_WORKER_CLASS = Choice("WEB_WORKER_CLASS", "gevent", ("gevent", "gthread"))
WEB_CONCURRENCY = Number("WEB_CONCURRENCY", 2, int, low=1)
WEB_CONNECTIONS = Number("WEB_CONNECTIONS", 4000, int, low=1)
WEB_THREADS = Number("WEB_THREADS", 32, int, low=1)
KEEPALIVE = Number("KEEPALIVE", 75, int, low=1)
# gevent workers: the first request's line and headers must arrive within this many seconds
# of the connection, else the connection is answered 408 and closed (slow clients that never finish).
HEADER_TIMEOUT_SECONDS = Number("HEADER_TIMEOUT_SECONDS", 20.0, low=0.5, high=300)

# Usage budgets per user (app/budgets.py); 0: no budget. Days and months in BUDGET_TIMEZONE.
BUDGET_TOKENS_PER_DAY = Number("BUDGET_TOKENS_PER_DAY", 0, int, low=0)
BUDGET_TOKENS_PER_MONTH = Number("BUDGET_TOKENS_PER_MONTH", 0, int, low=0)
BUDGET_USD_PER_DAY = Number("BUDGET_USD_PER_DAY", 0.0, low=0)
BUDGET_USD_PER_MONTH = Number("BUDGET_USD_PER_MONTH", 0.0, low=0)
BUDGET_TIMEZONE = Text("BUDGET_TIMEZONE", "UTC")
# USD per million input / cached input / output tokens per model, as JSON, or a file of that JSON.
PRICES = Text("PRICES")
PRICES_FILE = Text("PRICES_FILE")

"""One immutable Settings object, parsed once from the environment.

A bad value raises ConfigError with a message that names the variable, so the
start stops with one line a person can act on. The variables, their defaults
and parsers are those of `app.environment`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

import jwt
from jwt.algorithms import get_default_algorithms
from limits import parse_many

from app import environment as var
from app.assistant_types import AssistantType
from app.budgets import Budgets, load_budgets
from app.environment import ConfigError, text
from app.tools import ToolError, client_tools, load_tools

OFFLINE = var.OFFLINE
RATELIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
_TYPE_VARIABLE = re.compile(
    r"^ASSISTANT_([A-Z0-9_]+?)_(ID|MODEL|INSTRUCTIONS_FILE|INSTRUCTIONS|TEMPERATURE|TOP_P|TOOLS|CLIENT_TOOLS|DESCRIPTION|"
    r"VECTOR_STORE_IDS|FILE_SEARCH_MAX_RESULTS|ALLOW_OVERRIDES)$"
)
_TYPE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_VECTOR_STORE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
# file_search's documented range of max_num_results.
FILE_SEARCH_MAX_RESULTS = 50
# file_search on the Responses API searches at most this many vector stores per call: a
# larger list is refused with a 400 ("maximum of 2 vector stores allowed"; observed, not documented).
MAX_VECTOR_STORES_PER_SEARCH = 2


@dataclass(frozen=True)
class Settings:
    """Everything the backend reads from its environment."""

    assistant_types: tuple[AssistantType, ...]
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    engine: str = var.OPENAI_ENGINE.default
    run_timeout_seconds: float = var.RUN_TIMEOUT_SECONDS.default
    run_cancel_on_timeout: bool = var.RUN_CANCEL_ON_TIMEOUT.default
    wait_strategy: str = var.WAIT_STRATEGY.default
    poll_first_ms: int = var.POLL_FIRST_MS.default
    poll_max_ms: int = var.POLL_MAX_MS.default
    poll_budget: int = var.POLL_BUDGET.default  # looks at runs per second per process (app/runs/polling.py); 0: none
    upstream_timeout_seconds: float = var.UPSTREAM_TIMEOUT_SECONDS.default
    tool_max_rounds: int = var.TOOL_MAX_ROUNDS.default
    tool_outputs_timeout_seconds: float = var.TOOL_OUTPUTS_TIMEOUT_SECONDS.default
    auth_mode: str = var.AUTH_MODE.default
    api_tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    jwt_key: str | None = None
    jwt_algorithms: tuple[str, ...] = (var.JWT_ALGORITHMS.default,)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    database_url: str = var.DATABASE_URL.default
    database_auto_migrate: bool = var.DATABASE_AUTO_MIGRATE.default
    cors_origins: tuple[str, ...] = (var.CORS_ORIGINS.default,)
    max_body_bytes: int = var.MAX_BODY_BYTES.default
    max_message_chars: int = var.MAX_MESSAGE_CHARS.default
    max_metadata_pairs: int = 16
    max_inflight_runs: int = var.MAX_INFLIGHT_RUNS.default
    forwarded_proxies: int = var.FORWARDED_PROXIES.default  # proxies in front whose X-Forwarded-* headers are trusted
    log_level: str = var.LOG_LEVEL.default.upper()
    log_format: str = var.LOG_FORMAT.default
    ratelimit_runs: str | None = var.RATELIMIT_RUNS.default  # per user; None: no limit
    ratelimit_default: str | None = var.RATELIMIT_DEFAULT.default  # per user, every API call; None: no limit
    ratelimit_storage_uri: str = var.RATELIMIT_STORAGE_URI.default
    ratelimit_fail: str = var.RATELIMIT_FAIL.default  # "open" or "closed" when the shared store fails
    ratelimit_storage_timeout_seconds: float = var.RATELIMIT_STORAGE_TIMEOUT_SECONDS.default
    ratelimit_shared_file: str | None = None  # memory:// counters shared by the workers of one master
    event_log_url: str = "memory://"  # streamed runs' events (app/event_log.py): memory:// or Redis
    stream_replay_seconds: float = var.STREAM_REPLAY_SECONDS.default
    event_log_timeout_seconds: float = var.EVENT_LOG_TIMEOUT_SECONDS.default
    chat_page: bool = var.CHAT_PAGE.default  # serve the chat page at `/`
    file_max_bytes: int = var.FILE_MAX_BYTES.default
    admin_users: frozenset[str] = frozenset()
    assistant_instructions_visible: bool = var.ASSISTANT_INSTRUCTIONS_VISIBLE.default
    budgets: Budgets = field(default_factory=Budgets)  # usage budgets and prices (app/budgets.py)

    @property
    def offline(self) -> bool:
        """Whether the built-in offline upstream answers instead of OpenAI."""
        return self.openai_base_url == OFFLINE


def _rate_limit(env, variable: var.Text):
    """A limits-style rate ("30/minute", "5/second;100/hour"), or None for "off"."""
    name = variable.name
    raw = variable.read(env)
    if raw.lower() in ("off", "none", "0"):
        return None
    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a rate such as '30/minute' (or 'off'), got {raw!r}") from None
    return raw


def _storage_uri(env, variable: var.Text):
    name = variable.name
    raw = variable.read(env)
    if urlparse(raw).scheme not in RATELIMIT_STORAGE_SCHEMES:
        raise ConfigError(f"{name}: expected memory:// or a redis:// URL, got a {urlparse(raw).scheme or 'bare'} URI")
    return raw


def _event_log_url(env) -> str:
    """EVENT_LOG_URL, or the rate limits' Redis when it is unset (one Redis for both), else memory://."""
    raw = var.EVENT_LOG_URL.read(env)
    if raw is None:
        limits = _storage_uri(env, var.RATELIMIT_STORAGE_URI)
        return limits if urlparse(limits).scheme in ("redis", "rediss") else "memory://"
    if urlparse(raw).scheme not in ("memory", "redis", "rediss"):
        scheme = urlparse(raw).scheme or "bare"
        raise ConfigError(f"EVENT_LOG_URL: expected memory:// or a redis:// URL, got a {scheme} URI")
    return raw


def _is_local_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _client_tools(name: str, raw: str | None, server_tools) -> tuple:
    """The client tools a type declares: a JSON list of function tools, or the path of a JSON file of one."""
    if raw is None:
        return ()
    if raw.startswith(("[", "{")):
        source = raw
    else:
        try:
            source = Path(raw).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{name}: cannot read {raw}: {exc.strerror}") from None
    try:
        declared = json.loads(source)
    except ValueError as exc:
        raise ConfigError(f"{name}: not a JSON list of function tools ({exc})") from None
    try:
        return client_tools(declared, server_tools)
    except ToolError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _overrides(name: str, raw: str | None) -> frozenset[str]:
    """The run body fields a type lets its clients set: a comma-separated subset of instructions, model."""
    chosen = frozenset(part.strip().lower() for part in (raw or "").split(",") if part.strip())
    unknown = sorted(chosen - set(var.OVERRIDABLE))
    if unknown:
        raise ConfigError(f"{name}: expected a list of {', '.join(var.OVERRIDABLE)}, got {', '.join(unknown)}")
    return chosen


def _assistant_types(env) -> tuple[AssistantType, ...]:
    groups: dict[str, dict[str, str]] = {}
    for key, value in env.items():
        match = _TYPE_VARIABLE.match(key)
        if match and value.strip():
            groups.setdefault(match.group(1), {})[match.group(2)] = value.strip()
    types = []
    for upper, values in sorted(groups.items()):
        name = upper.lower()
        prefix = f"ASSISTANT_{upper}_"
        if not _TYPE_NAME.match(name):
            raise ConfigError(f"{prefix}*: {name!r} is not a usable type name")
        instructions = values.get("INSTRUCTIONS")
        if "INSTRUCTIONS_FILE" in values:
            if instructions:
                raise ConfigError(f"{prefix}INSTRUCTIONS_FILE: set either it or {prefix}INSTRUCTIONS, not both")
            try:
                instructions = Path(values["INSTRUCTIONS_FILE"]).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"{prefix}INSTRUCTIONS_FILE: cannot read {values['INSTRUCTIONS_FILE']}: {exc.strerror}"
                ) from None
        assistant_id = values.get("ID")
        if assistant_id and not re.fullmatch(r"[A-Za-z0-9_-]{1,128}", assistant_id):
            raise ConfigError(f"{prefix}ID: {assistant_id!r} is not an assistant ID")
        try:
            tools = load_tools(values.get("TOOLS", ""))
        except ToolError as exc:
            raise ConfigError(f"{prefix}TOOLS: {exc}") from None
        types.append(
            AssistantType(
                description=values.get("DESCRIPTION"),
                vector_store_ids=_vector_store_ids(prefix + "VECTOR_STORE_IDS", values.get("VECTOR_STORE_IDS", "")),
                file_search_max_results=var.Number(
                    prefix + "FILE_SEARCH_MAX_RESULTS", None, int, low=1, high=FILE_SEARCH_MAX_RESULTS
                ).read(env),
                name=name,
                assistant_id=assistant_id,
                model=values.get("MODEL"),
                instructions=instructions,
                temperature=var.Number(prefix + "TEMPERATURE", None, low=0, high=2).read(env),
                top_p=var.Number(prefix + "TOP_P", None, low=0, high=1).read(env),
                tools=tools,
                client_tools=_client_tools(prefix + "CLIENT_TOOLS", values.get("CLIENT_TOOLS"), tools),
                allow_overrides=_overrides(prefix + "ALLOW_OVERRIDES", values.get("ALLOW_OVERRIDES")),
            )
        )
    return tuple(types)


def _vector_store_ids(name: str, raw: str) -> tuple[str, ...]:
    """A comma-separated list of vector store IDs, each once."""
    ids = tuple(dict.fromkeys(part.strip() for part in raw.split(",") if part.strip()))
    for store_id in ids:
        if not _VECTOR_STORE_ID.match(store_id):
            raise ConfigError(f"{name}: {store_id!r} is not a vector store ID")
    return ids


def _admin_users(env) -> frozenset[str]:
    return frozenset(user.strip() for user in var.ADMIN_USERS.read(env).split(",") if user.strip())


def _check_types(types, engine):
    if not types:
        raise ConfigError("ASSISTANT_<TYPE>_*: no assistant type is configured (e.g. ASSISTANT_CURATOR_MODEL)")
    for t in types:
        prefix = f"ASSISTANT_{t.name.upper()}_"
        if len(t.vector_store_ids) > MAX_VECTOR_STORES_PER_SEARCH:
            raise ConfigError(
                f"{prefix}VECTOR_STORE_IDS: at most {MAX_VECTOR_STORES_PER_SEARCH} vector stores "
                "(file_search searches no more in one call)"
            )
        if engine == "assistants" and not t.assistant_id:
            raise ConfigError(f"{prefix}ID: required by OPENAI_ENGINE=assistants")
        if engine == "responses" and not t.model:
            raise ConfigError(f"{prefix}MODEL: required by OPENAI_ENGINE=responses")


def _tokens(env) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in text(env, "API_TOKENS", "").split(","))):
        user, sep, token = pair.partition(":")
        if not sep or not user.strip() or len(token.strip()) < 8:
            raise ConfigError("API_TOKENS: expected user:token pairs, each token at least 8 characters")
        tokens[token.strip()] = user.strip()
    return tokens


def _check_jwt_key(key: str, algorithms: tuple[str, ...], public: bool) -> None:
    """Refuse a key that cannot verify every configured algorithm: HS* take a secret, the others a public key."""
    known = get_default_algorithms()
    if not algorithms:
        raise ConfigError("JWT_ALGORITHMS: no algorithm given")
    for name in algorithms:
        if name not in known:
            raise ConfigError(f"JWT_ALGORITHMS: unknown algorithm {name!r} (e.g. HS256, RS256, ES256, EdDSA)")
        hmac = name.startswith("HS")
        if public and hmac:
            raise ConfigError(
                f"JWT_PUBLIC_KEY: {name} verifies with a shared secret (JWT_SECRET), not a public key; "
                "set JWT_ALGORITHMS to the key's algorithm (e.g. RS256 or ES256)"
            )
        if not public and not hmac:
            raise ConfigError(
                f"JWT_SECRET: {name} verifies with a public key (JWT_PUBLIC_KEY), not a secret; "
                "set JWT_PUBLIC_KEY, or JWT_ALGORITHMS=HS256"
            )
        try:
            known[name].prepare_key(key)
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            variable = "JWT_PUBLIC_KEY" if public else "JWT_SECRET"
            raise ConfigError(f"{variable}: not a usable {name} key: {exc}") from None


def inflight_limit(width: int) -> int:
    """Runs one worker of `width` threads (gthread) or connections (gevent) may wait for; the rest
    stay free for quick requests."""
    return max(1, width - max(2, width // 8))


def load_settings(env=None) -> Settings:
    """Parse the environment (os.environ by default) into Settings."""
    env = os.environ if env is None else env
    engine = var.OPENAI_ENGINE.read(env)
    base_url = var.OPENAI_BASE_URL.read(env)
    api_key = text(env, "OPENAI_API_KEY")
    if base_url and base_url != OFFLINE and urlparse(base_url).scheme not in ("http", "https"):
        raise ConfigError(f"OPENAI_BASE_URL: expected an http(s) URL or 'offline', got {base_url!r}")
    if not api_key and not (base_url and (base_url == OFFLINE or _is_local_url(base_url))):
        raise ConfigError("OPENAI_API_KEY: required (or set OPENAI_BASE_URL=offline for the offline upstream)")
    types = _assistant_types(env)
    _check_types(types, engine)

    auth_mode = var.AUTH_MODE.read(env)
    tokens = _tokens(env)
    if auth_mode == "token" and not tokens:
        raise ConfigError("API_TOKENS: required when AUTH_MODE=token (user:token pairs)")
    jwt_key = text(env, "JWT_PUBLIC_KEY") or text(env, "JWT_SECRET")
    algorithms = tuple(a.strip() for a in var.JWT_ALGORITHMS.read(env).split(",") if a.strip())
    if auth_mode == "jwt":
        if not jwt_key:
            raise ConfigError("JWT_SECRET: required when AUTH_MODE=jwt (or JWT_PUBLIC_KEY)")
        if "none" in (a.lower() for a in algorithms):
            raise ConfigError("JWT_ALGORITHMS: 'none' is not allowed")
        if not text(env, "JWT_PUBLIC_KEY") and len(jwt_key) < 32:
            raise ConfigError("JWT_SECRET: too short to sign with; use at least 32 random characters")
        _check_jwt_key(jwt_key, algorithms, public=bool(text(env, "JWT_PUBLIC_KEY")))

    timeout = var.RUN_TIMEOUT_SECONDS.read(env)
    upstream_timeout = replace(var.UPSTREAM_TIMEOUT_SECONDS, high=timeout).read(
        env, min(var.UPSTREAM_TIMEOUT_SECONDS.default, timeout / 2)
    )
    # gunicorn.conf.py sets WORKER_THREADS (gthread) or WORKER_CONNECTIONS (gevent), so that a
    # worker keeps room for quick requests.
    width = var.WORKER_THREADS.read(env) or var.WORKER_CONNECTIONS.read(env)
    inflight = inflight_limit(width) if width else var.MAX_INFLIGHT_RUNS.default
    return Settings(
        assistant_types=types,
        openai_api_key=api_key,
        openai_base_url=base_url,
        engine=engine,
        run_timeout_seconds=timeout,
        run_cancel_on_timeout=var.RUN_CANCEL_ON_TIMEOUT.read(env),
        wait_strategy=var.WAIT_STRATEGY.read(env),
        poll_first_ms=var.POLL_FIRST_MS.read(env),
        poll_max_ms=var.POLL_MAX_MS.read(env),
        poll_budget=var.POLL_BUDGET.read(env),
        upstream_timeout_seconds=upstream_timeout,
        tool_max_rounds=var.TOOL_MAX_ROUNDS.read(env),
        tool_outputs_timeout_seconds=var.TOOL_OUTPUTS_TIMEOUT_SECONDS.read(env),
        auth_mode=auth_mode,
        api_tokens=tokens,
        jwt_key=jwt_key,
        jwt_algorithms=algorithms,
        jwt_audience=text(env, "JWT_AUDIENCE"),
        jwt_issuer=text(env, "JWT_ISSUER"),
        database_url=var.DATABASE_URL.read(env),
        database_auto_migrate=var.DATABASE_AUTO_MIGRATE.read(env),
        cors_origins=tuple(o.strip() for o in var.CORS_ORIGINS.read(env).split(",") if o.strip()),
        max_body_bytes=var.MAX_BODY_BYTES.read(env),
        max_message_chars=var.MAX_MESSAGE_CHARS.read(env),
        max_inflight_runs=var.MAX_INFLIGHT_RUNS.read(env, inflight),
        forwarded_proxies=var.FORWARDED_PROXIES.read(env),
        log_level=var.LOG_LEVEL.read(env).upper(),
        log_format=var.LOG_FORMAT.read(env),
        ratelimit_runs=_rate_limit(env, var.RATELIMIT_RUNS),
        ratelimit_default=_rate_limit(env, var.RATELIMIT_DEFAULT),
        ratelimit_storage_uri=_storage_uri(env, var.RATELIMIT_STORAGE_URI),
        ratelimit_fail=var.RATELIMIT_FAIL.read(env),
        ratelimit_storage_timeout_seconds=var.RATELIMIT_STORAGE_TIMEOUT_SECONDS.read(env),
        ratelimit_shared_file=var.RATELIMIT_SHARED_FILE.read(env),
        event_log_url=_event_log_url(env),
        stream_replay_seconds=var.STREAM_REPLAY_SECONDS.read(env),
        event_log_timeout_seconds=var.EVENT_LOG_TIMEOUT_SECONDS.read(env),
        chat_page=var.CHAT_PAGE.read(env),
        file_max_bytes=var.FILE_MAX_BYTES.read(env),
        admin_users=_admin_users(env),
        assistant_instructions_visible=var.ASSISTANT_INSTRUCTIONS_VISIBLE.read(env),
        budgets=load_budgets(env, tuple(t.name for t in types)),
    )

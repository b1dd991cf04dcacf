"""One immutable Settings object, parsed once from the environment.

A bad value raises ConfigError with a message that names the variable, so the
start stops with one line a person can act on.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import jwt
from jwt.algorithms import get_default_algorithms
from limits import parse_many

from app.assistants import AssistantType

OFFLINE = "offline"
ENGINES = ("responses", "assistants")
AUTH_MODES = ("none", "token", "jwt")
WAIT_STRATEGIES = ("poll", "fixed", "stream")
RATELIMIT_STORAGE_SCHEMES = ("memory", "redis", "rediss", "redis+unix", "redis+sentinel", "redis+cluster")
_TYPE_VARIABLE = re.compile(r"^ASSISTANT_([A-Z0-9_]+?)_(ID|MODEL|INSTRUCTIONS_FILE|INSTRUCTIONS|TEMPERATURE|TOP_P)$")
_TYPE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


class ConfigError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    """Everything the backend reads from its environment."""

    assistant_types: tuple[AssistantType, ...]
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    engine: str = "responses"
    run_timeout_seconds: float = 60.0
    run_cancel_on_timeout: bool = True
    wait_strategy: str = "poll"
    poll_first_ms: int = 500
    poll_max_ms: int = 1000
    upstream_timeout_seconds: float = 10.0
    auth_mode: str = "token"
    api_tokens: dict[str, str] = field(default_factory=dict)  # token -> user
    jwt_key: str | None = None
    jwt_algorithms: tuple[str, ...] = ("HS256",)
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    database_url: str = "sqlite:///instance/backend.db"
    database_auto_migrate: bool = True
    cors_origins: tuple[str, ...] = ("http://localhost:8080",)
    max_body_bytes: int = 1_048_576
    max_message_chars: int = 32_768
    max_metadata_pairs: int = 16
    max_inflight_runs: int = 0  # 0: no limit of its own
    forwarded_proxies: int = 0  # proxies in front whose X-Forwarded-* headers are trusted
    log_level: str = "INFO"
    log_format: str = "text"
    ratelimit_runs: str | None = "30/minute"  # per user; None: no limit
    ratelimit_default: str | None = "600/minute"  # per user, every API call; None: no limit
    ratelimit_storage_uri: str = "memory://"

    @property
    def offline(self) -> bool:
        """Whether the built-in offline upstream answers instead of OpenAI."""
        return self.openai_base_url == OFFLINE

    def assistant_type(self, name: str) -> AssistantType | None:
        """The configured type of that name, if any."""
        return next((t for t in self.assistant_types if t.name == name), None)


def _text(env, name, default=None):
    value = env.get(name, "").strip()
    return value if value else default


def _number(env, name, default, kind=float, low=None, high=None):
    raw = _text(env, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a {'whole ' if kind is int else ''}number, got {raw!r}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{name}: {raw} is outside {low}..{high}")
    return value


def _flag(env, name, default):
    raw = _text(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}: expected true or false, got {raw!r}")


def _choice(env, name, default, choices):
    value = _text(env, name, default).lower()
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _rate_limit(env, name, default):
    """A limits-style rate ("30/minute", "5/second;100/hour"), or None for "off"."""
    raw = _text(env, name, default)
    if raw.lower() in ("off", "none", "0"):
        return None
    try:
        parse_many(raw)
    except ValueError:
        raise ConfigError(f"{name}: expected a rate such as '30/minute' (or 'off'), got {raw!r}") from None
    return raw


def _storage_uri(env, name, default):
    raw = _text(env, name, default)
    if urlparse(raw).scheme not in RATELIMIT_STORAGE_SCHEMES:
        raise ConfigError(f"{name}: expected memory:// or a redis:// URL, got a {urlparse(raw).scheme or 'bare'} URI")
    return raw


def _is_local_url(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        types.append(
            AssistantType(
                name=name,
                assistant_id=assistant_id,
                model=values.get("MODEL"),
                instructions=instructions,
                temperature=_number(env, prefix + "TEMPERATURE", None, low=0, high=2),
                top_p=_number(env, prefix + "TOP_P", None, low=0, high=1),
            )
        )
    return tuple(types)


def _check_types(types, engine):
    if not types:
        raise ConfigError("ASSISTANT_<TYPE>_*: no assistant type is configured (e.g. ASSISTANT_CURATOR_MODEL)")
    for t in types:
        prefix = f"ASSISTANT_{t.name.upper()}_"
        if engine == "assistants" and not t.assistant_id:
            raise ConfigError(f"{prefix}ID: required by OPENAI_ENGINE=assistants")
        if engine == "responses" and not t.model:
            raise ConfigError(f"{prefix}MODEL: required by OPENAI_ENGINE=responses")


def _tokens(env) -> dict[str, str]:
    tokens: dict[str, str] = {}
    for pair in filter(None, (p.strip() for p in _text(env, "API_TOKENS", "").split(","))):
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


def inflight_limit(threads: int) -> int:
    """Runs one worker of `threads` threads may wait for; the other threads stay free for quick requests."""
    return max(1, threads - max(2, threads // 8))


def load_settings(env=None) -> Settings:
    """Parse the environment (os.environ by default) into Settings."""
    env = os.environ if env is None else env
    engine = _choice(env, "OPENAI_ENGINE", "responses", ENGINES)
    base_url = _text(env, "OPENAI_BASE_URL")
    api_key = _text(env, "OPENAI_API_KEY")
    if base_url and base_url != OFFLINE and urlparse(base_url).scheme not in ("http", "https"):
        raise ConfigError(f"OPENAI_BASE_URL: expected an http(s) URL or 'offline', got {base_url!r}")
    if not api_key and not (base_url and (base_url == OFFLINE or _is_local_url(base_url))):
        raise ConfigError("OPENAI_API_KEY: required (or set OPENAI_BASE_URL=offline for the offline upstream)")
    types = _assistant_types(env)
    _check_types(types, engine)

    auth_mode = _choice(env, "AUTH_MODE", "token", AUTH_MODES)
    tokens = _tokens(env)
    if auth_mode == "token" and not tokens:
        raise ConfigError("API_TOKENS: required when AUTH_MODE=token (user:token pairs)")
    jwt_key = _text(env, "JWT_PUBLIC_KEY") or _text(env, "JWT_SECRET")
    algorithms = tuple(a.strip() for a in _text(env, "JWT_ALGORITHMS", "HS256").split(",") if a.strip())
    if auth_mode == "jwt":
        if not jwt_key:
            raise ConfigError("JWT_SECRET: required when AUTH_MODE=jwt (or JWT_PUBLIC_KEY)")
        if "none" in (a.lower() for a in algorithms):
            raise ConfigError("JWT_ALGORITHMS: 'none' is not allowed")
        if not _text(env, "JWT_PUBLIC_KEY") and len(jwt_key) < 32:
            raise ConfigError("JWT_SECRET: too short to sign with; use at least 32 random characters")
        _check_jwt_key(jwt_key, algorithms, public=bool(_text(env, "JWT_PUBLIC_KEY")))

    timeout = _number(env, "RUN_TIMEOUT_SECONDS", 60.0, low=1, high=3600)
    # gunicorn.conf.py sets WORKER_THREADS, so that a worker keeps threads free for quick requests.
    threads = _number(env, "WORKER_THREADS", 0, int, low=0, high=100_000)
    inflight = inflight_limit(threads) if threads else 0
    return Settings(
        assistant_types=types,
        openai_api_key=api_key,
        openai_base_url=base_url,
        engine=engine,
        run_timeout_seconds=timeout,
        run_cancel_on_timeout=_flag(env, "RUN_CANCEL_ON_TIMEOUT", True),
        wait_strategy=_choice(env, "WAIT_STRATEGY", "poll", WAIT_STRATEGIES),
        poll_first_ms=_number(env, "POLL_FIRST_MS", 500, int, low=1, high=60_000),
        poll_max_ms=_number(env, "POLL_MAX_MS", 1000, int, low=1, high=60_000),
        upstream_timeout_seconds=_number(
            env, "UPSTREAM_TIMEOUT_SECONDS", min(10.0, timeout / 2), low=0.1, high=timeout
        ),
        auth_mode=auth_mode,
        api_tokens=tokens,
        jwt_key=jwt_key,
        jwt_algorithms=algorithms,
        jwt_audience=_text(env, "JWT_AUDIENCE"),
        jwt_issuer=_text(env, "JWT_ISSUER"),
        database_url=_text(env, "DATABASE_URL", "sqlite:///instance/backend.db"),
        database_auto_migrate=_flag(env, "DATABASE_AUTO_MIGRATE", True),
        cors_origins=tuple(
            o.strip() for o in _text(env, "CORS_ORIGINS", "http://localhost:8080").split(",") if o.strip()
        ),
        max_body_bytes=_number(env, "MAX_BODY_BYTES", 1_048_576, int, low=1024, high=100 * 1_048_576),
        max_message_chars=_number(env, "MAX_MESSAGE_CHARS", 32_768, int, low=1, high=1_048_576),
        max_metadata_pairs=16,
        max_inflight_runs=_number(env, "MAX_INFLIGHT_RUNS", inflight, int, low=0, high=1_000_000),
        forwarded_proxies=_number(env, "FORWARDED_PROXIES", 0, int, low=0, high=10),
        log_level=_choice(env, "LOG_LEVEL", "info", ("debug", "info", "warning", "error")).upper(),
        log_format=_choice(env, "LOG_FORMAT", "text", ("text", "json")),
        ratelimit_runs=_rate_limit(env, "RATELIMIT_RUNS", "30/minute"),
        ratelimit_default=_rate_limit(env, "RATELIMIT_DEFAULT", "600/minute"),
        ratelimit_storage_uri=_storage_uri(env, "RATELIMIT_STORAGE_URI", "memory://"),
    )

"""Who is calling: `Authorization: Bearer <token>`, as a static token or a JWT."""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging

import jwt
from flask import g, request

from app.errors import ApiError
from app.settings import Settings

ANONYMOUS = "anonymous"

log = logging.getLogger("app.auth")


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, message, headers={"WWW-Authenticate": 'Bearer realm="api"', "x-should-retry": "false"})


def _bearer() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("Missing credentials: send 'Authorization: Bearer <token>'.")
    return token.strip()


@functools.lru_cache(maxsize=8)
def _tokens_by_digest(tokens: tuple[tuple[str, str], ...]) -> dict[bytes, tuple[bytes, str]]:
    """The configured tokens by their SHA-256: {digest: (token, user)}."""
    return {hashlib.sha256(known.encode()).digest(): (known.encode(), owner) for known, owner in tokens}


def _token_user(settings: Settings, token: str) -> str:
    # Looked up by the token's SHA-256, then compared in constant time: the time taken says
    # nothing about how much of a token was right, and does not grow with the number of tokens.
    presented = token.encode()
    found = _tokens_by_digest(tuple(settings.api_tokens.items())).get(hashlib.sha256(presented).digest())
    if found is None or not hmac.compare_digest(found[0], presented):
        raise _unauthorized("Invalid token.")
    return found[1]


def _jwt_user(settings: Settings, token: str) -> str:
    options = {"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None}
    try:
        claims = jwt.decode(
            token,
            settings.jwt_key,
            algorithms=list(settings.jwt_algorithms),
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options=options,
        )
    except jwt.ExpiredSignatureError:
        raise _unauthorized("Token expired.") from None
    except jwt.InvalidTokenError as exc:
        raise _unauthorized(f"Invalid token: {exc}.") from None
    except jwt.PyJWTError as exc:
        # Not the token's fault alone: the configured key does not fit the token's algorithm.
        log.warning("JWT not verifiable with the configured key: %s", exc)
        raise _unauthorized("Invalid token: it cannot be verified with this server's key.") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise _unauthorized("Invalid token: no subject.")
    return subject


def authenticate(settings: Settings) -> str:
    """The calling user, stored in `g.user`; 401 when the credentials don't hold."""
    if settings.auth_mode == "none":
        user = ANONYMOUS
    elif settings.auth_mode == "token":
        user = _token_user(settings, _bearer())
    else:
        user = _jwt_user(settings, _bearer())
    g.user = user
    return user


def require_admin(settings: Settings | None = None) -> str:
    """The calling user when they are an administrator (ADMIN_USERS); 403 for anyone else."""
    if settings is None:
        from app.api import services  # here, not above: app.api imports this module

        settings = services().settings
    user = g.user if "user" in g else authenticate(settings)
    if user not in settings.admin_users:
        raise ApiError(403, "This needs an administrator (ADMIN_USERS).", headers={"x-should-retry": "false"})
    return user

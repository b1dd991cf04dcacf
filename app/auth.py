"""Who is calling: `Authorization: Bearer <token>`, as a static token or a JWT."""

from __future__ import annotations

import hmac
import logging

import jwt
from flask import current_app, g, request

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


def _token_user(settings: Settings, token: str) -> str:
    # Compare against every token, always, so the time taken says nothing.
    user = None
    for known, owner in settings.api_tokens.items():
        if hmac.compare_digest(known.encode(), token.encode()):
            user = owner
    if user is None:
        raise _unauthorized("Invalid token.")
    return user


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


def require_admin() -> str:
    """The calling user when ADMIN_USERS names them; 403 otherwise."""
    settings = current_app.extensions["services"].settings
    user = g.user if "user" in g else authenticate(settings)
    if user not in settings.admin_users:
        raise ApiError(403, "This needs an administrator (ADMIN_USERS).")
    return user

"""One look at the upstream at start, off the request path: a warning when it does not answer
at all or refuses the key, so that a wrong OPENAI_BASE_URL or key is said at once.

Standard library only: gunicorn.conf.py loads this file by path in the master, which never
imports the app (one warning per start, not one per worker).
"""

from __future__ import annotations

import socket
import ssl
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.openai.com/v1"
PROBE_SECONDS = 3.0
# Set in the environment of gunicorn's workers when the master has probed already.
PROBED_VARIABLE = "BACKEND_UPSTREAM_PROBED"


def _address(base_url: str) -> str:
    parts = urlsplit(base_url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _cause(error: BaseException) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, ssl.SSLError):
        return "TLS error (certificate or protocol)"
    if isinstance(reason, socket.gaierror):
        return "the host name does not resolve"
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return f"no answer within {PROBE_SECONDS:g} s"
    return f"{reason.__class__.__name__}"


def probe(base_url: str | None, api_key: str | None, timeout: float = PROBE_SECONDS) -> str | None:
    """A warning about the upstream at `base_url` (GET /models with the key), or None when it answers
    and accepts the key. Never raises, never names the key."""
    base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
    address = _address(base_url)
    request = urllib.request.Request(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key or ''}"})
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return None
    except urllib.error.HTTPError as error:
        error.close()
        if error.code in (401, 403):
            return f"the upstream at {address} refuses this backend's key (HTTP {error.code}): check OPENAI_API_KEY"
        return None  # it answers; what it thinks of /models is not the question
    except Exception as error:  # noqa: BLE001 - a probe must never fail the start
        return (
            f"the upstream at {address} does not answer ({_cause(error)}): runs will fail until it does; "
            "check OPENAI_BASE_URL"
        )


def probe_in_background(base_url: str | None, api_key: str | None, warn: Callable[[str], None]) -> threading.Thread:
    """Run `probe` in a daemon thread, calling `warn` with its warning if there is one."""

    def look():
        warning = probe(base_url, api_key)
        if warning:
            warn(warning)

    thread = threading.Thread(target=look, name="upstream-probe", daemon=True)
    thread.start()
    return thread

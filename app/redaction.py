"""Taking secrets out of text that may reach a client or a log."""

from __future__ import annotations

import re

_KEYISH = re.compile(r"\b(sk|sess|key)-[A-Za-z0-9*_\-]{3,}")


def redact(text: str, secrets=()) -> str:
    """The text without the given secrets or anything shaped like an API key."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYISH.sub("[redacted]", text)

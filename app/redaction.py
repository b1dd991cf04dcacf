"""Taking secrets out of text that may reach a client or a log, and control characters out of log lines.

Standard library only: gunicorn.conf.py loads this file by path, without the app package.
"""

from __future__ import annotations

import re

_KEYISH = re.compile(r"\b(sk|sess|key)-[A-Za-z0-9*_\-]{3,}")
# Control characters, a newline above all, and the Unicode line and paragraph separators.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match) -> str:
    char = match.group()
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


def one_line(text: str) -> str:
    """The text with control characters escaped (`\\n`, `\\u001b`), so that it cannot start a forged log line."""
    return _UNSAFE.sub(_escaped, text)


def redact(text: str, secrets=()) -> str:
    """The text without the given secrets or anything shaped like an API key."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return _KEYISH.sub("[redacted]", text)


def redactor(secrets=()):
    """`redact` with these secrets, prepared once: one regular expression finds them all (longest
    first), instead of one pass over the text per secret (a log line is read once, not 50 times)."""
    known = sorted({s for s in secrets if s}, key=len, reverse=True)
    pattern = re.compile("|".join(re.escape(s) for s in known)) if known else None

    def apply(text: str) -> str:
        if pattern is not None:
            text = pattern.sub("[redacted]", text)
        return _KEYISH.sub("[redacted]", text)

    return apply

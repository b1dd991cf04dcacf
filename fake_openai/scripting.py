"""The `[fake status=... duration=...]` directive and the replies it scripts."""

import re

from .errors import bad_request

OUTCOMES = ("completed", "failed", "incomplete", "cancelled", "expired", "requires_action", "never")

_DIRECTIVE = re.compile(r"\[fake\b([^\]]*)\]")
_DIRECTIVE_WITH_SPACE = re.compile(r"\s*\[fake\b[^\]]*\]\s*")
_PAIR = re.compile(r"(\w+)=(\S+)")


class Script:
    """What one run/response will do: its outcome, its duration and the text it echoes."""

    def __init__(self, outcome, duration, text):
        self.outcome = outcome
        self.duration = duration
        self.text = text


def parse(text, default_duration):
    """Read the directive (if any) from a user message text; the echo text has it stripped."""
    outcome, duration = "completed", float(default_duration)
    match = _DIRECTIVE.search(text or "")
    if match:
        for key, value in _PAIR.findall(match.group(1)):
            if key == "status":
                if value not in OUTCOMES:
                    expected = ", ".join(OUTCOMES)
                    raise bad_request(f"fake directive: unknown status '{value}' (expected one of {expected})")
                outcome = value
            elif key == "duration":
                try:
                    duration = float(value)
                except ValueError:
                    duration = -1.0
                if not duration >= 0:
                    raise bad_request(f"fake directive: invalid duration '{value}'")
            else:
                raise bad_request(f"fake directive: unknown key '{key}' (expected status, duration)")
    cleaned = _DIRECTIVE_WITH_SPACE.sub(" ", text or "").strip()
    return Script(outcome, duration, cleaned)


def reply_text(script, label, partial=False):
    """The assistant reply: "Echo: <text>" (only its first half when partial), label first if any."""
    text = script.text[: len(script.text) // 2] if partial else script.text
    reply = "Echo: " + text
    return f"{label} {reply}" if label else reply


def count_tokens(text):
    """A rough token count, enough for plausible usage numbers."""
    return max(1, len(text.split()))

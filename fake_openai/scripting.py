"""The `[fake ...]` directive in the latest user message, and the replies it scripts.

    [fake status=<outcome> duration=<seconds>]
    [fake call=<tool name> args=<JSON object> call=<other> args=<...> rounds=<n>]

Several `call=` (each followed by its optional `args=`, default `{}`) make parallel calls;
`rounds=n` repeats the calls for n model turns before the model answers. Several
directives in one message add up.
"""

import json
import re

from .errors import bad_request

OUTCOMES = ("completed", "failed", "incomplete", "cancelled", "expired", "requires_action", "never")
KEYS = ("status", "duration", "call", "args", "rounds")

_DIRECTIVE_START = re.compile(r"\[fake\b")
_KEY = re.compile(r"\s*(\w+)=")
_PLAIN_VALUE = re.compile(r"[^\s\]]+")
# The shortcut `status=requires_action` calls this tool, declared or not.
LEGACY_CALL = ("get_weather", json.dumps({"city": "Paris"}))


class Script:
    """What one run/response will do: outcome, duration, echo text, and scripted tool calls."""

    def __init__(self, outcome, duration, text, calls=(), rounds=1):
        self.outcome = outcome
        self.duration = duration
        self.text = text
        self.calls = list(calls)  # [(name, arguments JSON string)]
        self.rounds = rounds

    @property
    def legacy_call(self):
        """True for `status=requires_action`: a call of get_weather whatever the tools."""
        return self.outcome == "requires_action"

    def planned_calls(self):
        """Every call the model makes before answering, in order (calls repeated per round)."""
        if self.legacy_call:
            return [LEGACY_CALL]
        return self.calls * self.rounds


def _directives(text):
    """[(start, end, [(key, raw value)])] for each directive in `text`."""
    found, position = [], 0
    while True:
        match = _DIRECTIVE_START.search(text, position)
        if not match:
            return found
        pairs, at = [], match.end()
        while True:
            key = _KEY.match(text, at)
            if not key:
                break
            at = key.end()
            if text[at : at + 1] in ("{", "["):
                try:
                    value, at = json.JSONDecoder().raw_decode(text, at)
                except ValueError:
                    raise bad_request(f"fake directive: invalid JSON for '{key.group(1)}'") from None
            else:
                plain = _PLAIN_VALUE.match(text, at)
                value = plain.group(0) if plain else ""
                at = plain.end() if plain else at
            pairs.append((key.group(1), value))
        rest = text.find("]", at)
        if rest == -1 or text[at:rest].strip():
            raise bad_request("fake directive: expected key=value pairs and a closing ']'")
        found.append((match.start(), rest + 1, pairs))
        position = rest + 1


def parse(text, default_duration):
    """Read the directives (if any) from a user message text; the echo text has them stripped."""
    text = text or ""
    outcome, duration, calls, rounds = "completed", float(default_duration), [], 1
    directives = _directives(text)
    for _, _, pairs in directives:
        for key, value in pairs:
            if key == "status":
                if value not in OUTCOMES:
                    expected = ", ".join(OUTCOMES)
                    raise bad_request(f"fake directive: unknown status '{value}' (expected one of {expected})")
                outcome = value
            elif key == "duration":
                duration = _number(value, "duration", float)
            elif key == "rounds":
                rounds = _number(value, "rounds", int)
                if rounds < 1:
                    raise bad_request(f"fake directive: invalid rounds '{value}'")
            elif key == "call":
                if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", value):
                    raise bad_request(f"fake directive: invalid tool name '{value}'")
                calls.append((value, "{}"))
            elif key == "args":
                if not calls or not isinstance(value, dict):
                    raise bad_request("fake directive: 'args' must be a JSON object following a 'call'")
                calls[-1] = (calls[-1][0], json.dumps(value))
            else:
                raise bad_request(f"fake directive: unknown key '{key}' (expected {', '.join(KEYS)})")
    if calls and outcome == "requires_action":
        raise bad_request("fake directive: 'call' and status=requires_action do not combine")
    cleaned = text
    for start, end, _ in reversed(directives):
        cleaned = cleaned[:start] + " " + cleaned[end:]
    cleaned = " ".join(cleaned.split())
    return Script(outcome, duration, cleaned, calls, rounds)


def _number(value, key, kind):
    try:
        number = kind(value)
    except (TypeError, ValueError):
        number = -1
    if not number >= 0:
        raise bad_request(f"fake directive: invalid {key} '{value}'")
    return number


def reply_text(script, label, partial=False, results=()):
    """The assistant reply: "Echo: <text>" (first half when partial), then " | <tool> -> <output>" per result."""
    text = script.text[: len(script.text) // 2] if partial else script.text
    reply = "Echo: " + text
    for name, output in results:
        reply += f" | {name} -> {output}"
    return f"{label} {reply}" if label else reply


def count_tokens(text):
    """A rough token count, enough for plausible usage numbers."""
    return max(1, len(text.split()))


def usage_numbers(script, reply, output_cap=None):
    """Deterministic (input, cached, output, reasoning) tokens of one run or response: the input
    counts the echoed text, half of it cached; the output counts the reply, plus 2 reasoning
    tokens per turn that all count as output, never more than `output_cap` (max_output_tokens
    and max_completion_tokens cover reasoning tokens too)."""
    prompt = count_tokens(script.text)
    reasoning = 2
    completion = (count_tokens(reply) if reply else 0) + reasoning
    if output_cap is not None:
        completion = min(completion, output_cap)
    return prompt, prompt // 2, completion, reasoning

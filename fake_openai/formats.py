"""Per-run knobs of a response or run: their checks (as OpenAI answers them) and what they do to the reply.

`max_output_tokens` / `max_completion_tokens` cut the reply at that many tokens (the fake counts
words); a JSON `text.format` / `response_format` makes the reply a JSON object.
"""

import json
import re

from . import scripting
from .errors import bad_request, invalid_type, invalid_value, missing_param

MIN_OUTPUT_TOKENS = 16  # Responses `max_output_tokens`
MIN_RUN_TOKENS = 256  # Assistants `max_completion_tokens` and `max_prompt_tokens`
FORMAT_TYPES = ("text", "json_object", "json_schema")
SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
TOOL_CHOICE_WORDS = ("none", "auto", "required")
_TOKEN = re.compile(r"\S+")


def _below_min(name, value, low):
    return bad_request(
        f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, but got {value} instead.",
        param=name,
        code="integer_below_min_value",
    )


def token_limit(body, name, low):
    """A token limit of the request body (None when absent), refused below `low`."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid_type(name, "an integer", value)
    if value < low:
        raise _below_min(name, value, low)
    return value


def text_format(text):
    """The flat `text.format` of a Responses request (`{"type": "text"}` when absent)."""
    if text is None:
        return {"type": "text"}
    if not isinstance(text, dict):
        raise invalid_type("text", "an object", text)
    for key in text:
        if key not in ("format", "verbosity"):
            raise bad_request(f"Unknown parameter: 'text.{key}'.", param=f"text.{key}", code="unknown_parameter")
    return flat_format(text.get("format"), "text.format")


def flat_format(value, param):
    """A flat format object (`{"type": "json_schema", "name", "schema", ...}`), checked as OpenAI does."""
    if value is None:
        return {"type": "text"}
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    kind = value.get("type")
    if kind is None:
        raise missing_param(f"{param}.type")
    if kind not in FORMAT_TYPES:
        raise invalid_value(f"{param}.type", kind, FORMAT_TYPES)
    allowed = {"type"} | ({"name", "schema", "strict", "description"} if kind == "json_schema" else set())
    for key in value:
        if key not in allowed:
            where = f"{param}.{key}"
            raise bad_request(f"Unknown parameter: '{where}'.", param=where, code="unknown_parameter")
    if kind == "json_schema":
        for key in ("name", "schema"):
            if key not in value:
                raise missing_param(f"{param}.{key}")
        if not isinstance(value["name"], str) or not SCHEMA_NAME.match(value["name"]):
            raise bad_request(
                f"Invalid '{param}.name': string does not match pattern. Expected a string that matches the "
                "pattern '^[a-zA-Z0-9_-]+$'.",
                param=f"{param}.name",
                code="invalid_value",
            )
        if not isinstance(value["schema"], dict):
            raise invalid_type(f"{param}.schema", "an object", value["schema"])
    return dict(value)


def assistants_format(value):
    """An Assistants `response_format` ("auto", or an object nesting `json_schema`), as a flat format."""
    if value is None or value == "auto":
        return {"type": "text"}
    if not isinstance(value, dict):
        raise invalid_type("response_format", "'auto' or an object", value)
    if value.get("type") != "json_schema":
        return flat_format(value, "response_format")
    nested = value.get("json_schema")
    if not isinstance(nested, dict):
        raise missing_param("response_format.json_schema")
    for key in value:
        if key not in ("type", "json_schema"):
            where = f"response_format.{key}"
            raise bad_request(f"Unknown parameter: '{where}'.", param=where, code="unknown_parameter")
    return flat_format({"type": "json_schema", **nested}, "response_format.json_schema")


def check_tool_choice(value, declared, function_shape):
    """`tool_choice`: one of the words, or a function the request declares. `function_shape` takes
    the name from the choice: Responses `{"type": "function", "name"}`, Assistants nested under `function`."""
    if value is None or value in TOOL_CHOICE_WORDS:
        return
    if isinstance(value, str):
        raise invalid_value("tool_choice", value, TOOL_CHOICE_WORDS)
    if not isinstance(value, dict):
        raise invalid_type("tool_choice", "a string or an object", value)
    if value.get("type") in ("file_search", "code_interpreter", "allowed_tools", "web_search_preview"):
        return
    if value.get("type") != "function":
        raise invalid_value("tool_choice.type", value.get("type"), ("function", "file_search", "code_interpreter"))
    name = function_shape(value)
    if not isinstance(name, str):
        raise missing_param("tool_choice.name")
    if declared is not None and name not in declared:
        raise bad_request(f"Tool choice '{name}' not found in 'tools' parameter.", param="tool_choice")


def check_truncation(value):
    """Responses `truncation`: "auto" or "disabled" (the default)."""
    if value is None:
        return "disabled"
    if value not in ("auto", "disabled"):
        raise invalid_value("truncation", value, ("auto", "disabled"))
    return value


def check_truncation_strategy(value):
    """Assistants `truncation_strategy`: {type: auto | last_messages, last_messages?}."""
    if value is None:
        return {"type": "auto", "last_messages": None}
    if not isinstance(value, dict):
        raise invalid_type("truncation_strategy", "an object", value)
    if value.get("type") not in ("auto", "last_messages"):
        raise invalid_value("truncation_strategy.type", value.get("type"), ("auto", "last_messages"))
    last = value.get("last_messages")
    if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 1):
        raise _below_min("truncation_strategy.last_messages", last, 1)
    return {"type": value["type"], "last_messages": last}


def _filled(schema, text):
    """A value that fits a JSON schema well enough: strings say `text`."""
    kind = schema.get("type") if isinstance(schema, dict) else None
    if kind == "object":
        properties = schema.get("properties") or {}
        names = schema.get("required") or list(properties)
        return {name: _filled(properties.get(name, {}), text) for name in names}
    return {"string": text, "integer": 0, "number": 0, "boolean": True, "array": [], "null": None}.get(kind, text)


def reply(fmt, script, label, partial, results):
    """The scripted reply in the requested format: text, or a JSON object that echoes it."""
    text = scripting.reply_text(script, label, partial=partial, results=results)
    if fmt["type"] == "json_object":
        return json.dumps({"echo": text})
    if fmt["type"] == "json_schema":
        return json.dumps(_filled({"type": "object", **fmt["schema"]}, text))
    return text


def over(text, limit):
    """Whether `text` has more tokens than `limit` (None: no limit)."""
    return limit is not None and scripting.count_tokens(text) > limit


def cut(text, limit):
    """`text` cut after its `limit`-th token (as it is when shorter or without a limit)."""
    if limit is None:
        return text
    tokens = list(_TOKEN.finditer(text))
    return text if len(tokens) <= limit else text[: tokens[limit - 1].end()]

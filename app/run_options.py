"""A run's own settings: parsed from the run body, checked once, and mapped to each upstream API.

The Assistants API took `additional_instructions`, `additional_messages`, `response_format`,
`max_completion_tokens`, `max_prompt_tokens`, `truncation_strategy`, `tool_choice`,
`parallel_tool_calls`, `metadata`, and (refused here unless the type allows them) `instructions`
and `model` per run. `parse` checks them all before anything reaches the upstream; every bad value
is a 400 that names its parameter. `responses_fields` and `assistants_fields` are what each
engine sends; `reported` is what the run object shows: the values applied, never a constant.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from app.assistant_types import AssistantType
from app.environment import OVERRIDABLE
from app.errors import ApiError, bad_request
from app.tools import MAX_CLIENT_TOOLS, Tool, ToolError, client_tools

# The run body fields this module reads (the view adds its own: assistant_type, stream, tools, ...).
FIELDS = frozenset(
    {
        "additional_instructions",
        "additional_messages",
        "response_format",
        "max_completion_tokens",
        "max_prompt_tokens",
        "truncation_strategy",
        "tool_choice",
        "parallel_tool_calls",
        "metadata",
        "instructions",
        "model",
    }
)
MIN_TOKENS = 256  # the Assistants API's minimum for max_prompt_tokens and max_completion_tokens
MAX_TOKENS = 2**31 - 1
# The Conversations API takes at most 20 items per request; the Assistants API set no bound.
MAX_ADDITIONAL_MESSAGES = 20
MAX_INSTRUCTIONS_CHARS = 256_000  # an assistant's instructions, as the Assistants API had them
SCHEMA_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
TOOL_CHOICE_WORDS = ("none", "auto", "required")
DEFAULT_TRUNCATION = {"type": "auto", "last_messages": None}
# The run object's fields that show the settings applied (see `reported`).
REPORTED = (
    "response_format",
    "tool_choice",
    "parallel_tool_calls",
    "truncation_strategy",
    "max_prompt_tokens",
    "max_completion_tokens",
    "metadata",
)
# Where the Responses API has no equivalent, the run is refused rather than run otherwise.
NO_LAST_MESSAGES = (
    "'truncation_strategy': type 'last_messages' is not available with this server's upstream (the Responses "
    'API): it can only drop the oldest items itself. Send {"type": "auto"} or leave it out.'
)
NO_MAX_PROMPT_TOKENS = (
    "'max_prompt_tokens' is not available with this server's upstream (the Responses API has no limit on "
    "input tokens); leave it out. Long threads are truncated from the oldest message ('truncation_strategy' auto)."
)


@dataclass(frozen=True)
class RunOptions:
    """A run's settings as the client sent them, checked; None (or empty) where it sent nothing."""

    additional_instructions: str | None = None
    additional_messages: tuple[dict, ...] = ()  # {"role", "content" (text), "metadata"?}
    response_format: str | dict | None = None
    max_completion_tokens: int | None = None
    max_prompt_tokens: int | None = None
    truncation_strategy: dict | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool | None = None
    metadata: dict = field(default_factory=dict)
    instructions: str | None = None  # only where the type allows it
    model: str | None = None  # only where the type allows it


def _validation():
    """The request checks of app.api, imported when first needed: app.api imports the engines,
    which import this module."""
    from app.api import validation

    return validation


def _refuse(param: str, message: str) -> ApiError:
    return bad_request(f"'{param}' {message}")


def _text(body: dict, name: str, max_chars: int) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _refuse(name, "must be a string.")
    if len(value) > max_chars:
        raise _refuse(name, f"is too long: {len(value)} characters, at most {max_chars}.")
    return value


def _whole(value) -> int | None:
    """`value` as an int if it is a whole number (JSON's 300.0 included), else None."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _tokens(body: dict, name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    whole = _whole(value)
    if whole is None or not MIN_TOKENS <= whole <= MAX_TOKENS:
        raise _refuse(name, f"must be a whole number of at least {MIN_TOKENS}.")
    return whole


def _messages(value, max_chars: int, max_pairs: int) -> tuple[dict, ...]:
    """`additional_messages`: messages as `POST .../messages` takes them, checked by the same rules."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ADDITIONAL_MESSAGES:
        raise _refuse("additional_messages", f"must be a list of at most {MAX_ADDITIONAL_MESSAGES} messages.")
    v = _validation()
    messages = []
    for index, raw in enumerate(value):
        where = f"additional_messages[{index}]"
        if isinstance(raw, dict) and "attachments" in raw:
            raise bad_request(f"'{where}.attachments': attachments are not supported by this backend.")
        if not isinstance(raw, dict) or set(raw) - {"role", "content", "metadata"}:
            raise bad_request(f'\'{where}\' must be {{"role", "content", "metadata"?}}.')
        try:
            message = {"role": v.role(raw.get("role")), "content": v.message_text(raw.get("content"), max_chars)}
            metadata = v.metadata(raw.get("metadata"), max_pairs)
        except ApiError as exc:
            raise bad_request(f"'{where}': {exc.message}") from None
        if metadata:
            message["metadata"] = metadata
        messages.append(message)
    return tuple(messages)


def _response_format(value, max_chars: int):
    """`response_format`: "auto", {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", ...}."""
    name = "response_format"
    if value is None or value == "auto":
        return value
    shapes = '"auto", {"type": "text"}, {"type": "json_object"} or {"type": "json_schema", "json_schema": {...}}'
    if not isinstance(value, dict) or value.get("type") not in ("text", "json_object", "json_schema"):
        raise _refuse(name, f"must be {shapes}.")
    if value["type"] != "json_schema":
        if set(value) != {"type"}:
            raise _refuse(name, f"of type '{value['type']}' takes no other field.")
        return {"type": value["type"]}
    if set(value) != {"type", "json_schema"} or not isinstance(value["json_schema"], dict):
        raise _refuse(name, 'of type \'json_schema\' must be {"type": "json_schema", "json_schema": {...}}.')
    spec = value["json_schema"]
    unknown = sorted(set(spec) - {"name", "description", "schema", "strict"})
    if unknown:
        raise _refuse(f"{name}.json_schema", f"takes name, description, schema and strict, not {', '.join(unknown)}.")
    if not isinstance(spec.get("name"), str) or not SCHEMA_NAME.fullmatch(spec["name"]):
        raise _refuse(f"{name}.json_schema.name", "must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'.")
    checked = {"name": spec["name"]}
    if spec.get("description") is not None:
        if not isinstance(spec["description"], str) or len(spec["description"]) > max_chars:
            raise _refuse(f"{name}.json_schema.description", f"must be a string of at most {max_chars} characters.")
        checked["description"] = spec["description"]
    if not isinstance(spec.get("schema"), dict):
        raise _refuse(f"{name}.json_schema.schema", "must be a JSON Schema object.")
    checked["schema"] = spec["schema"]
    if spec.get("strict") is not None:
        if not isinstance(spec["strict"], bool):
            raise _refuse(f"{name}.json_schema.strict", "must be true or false.")
        checked["strict"] = spec["strict"]
    return {"type": "json_schema", "json_schema": checked}


def _truncation(value) -> dict | None:
    """`truncation_strategy`: {"type": "auto"} or {"type": "last_messages", "last_messages": n >= 1}."""
    name = "truncation_strategy"
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - {"type", "last_messages"}:
        raise _refuse(name, 'must be {"type": "auto"} or {"type": "last_messages", "last_messages": n}.')
    last = value.get("last_messages")
    if value.get("type") == "auto":
        if last is not None:
            raise _refuse(name, "of type 'auto' takes no 'last_messages'.")
        return dict(DEFAULT_TRUNCATION)
    if value.get("type") == "last_messages":
        whole = _whole(last)
        if whole is None or not 1 <= whole <= MAX_TOKENS:
            raise _refuse(f"{name}.last_messages", "must be a whole number of at least 1.")
        return {"type": "last_messages", "last_messages": whole}
    raise _refuse(f"{name}.type", "must be 'auto' or 'last_messages'.")


def _tool_choice(value, functions: set[str], hosted: set[str]):
    """`tool_choice`: none, auto, required, a declared function, or a hosted tool the run has."""
    name = "tool_choice"
    if value is None:
        return None
    if isinstance(value, str):
        if value not in TOOL_CHOICE_WORDS:
            raise _refuse(name, "must be 'none', 'auto', 'required' or an object naming a tool.")
        if value == "required" and not (functions or hosted):
            raise _refuse(name, "'required' needs a tool, and this run has none.")
        return value
    if not isinstance(value, dict):
        raise _refuse(name, "must be 'none', 'auto', 'required' or an object naming a tool.")
    kind = value.get("type")
    if kind == "function":
        function = value.get("function")
        if set(value) != {"type", "function"} or not isinstance(function, dict) or set(function) != {"name"}:
            raise _refuse(name, 'of type \'function\' must be {"type": "function", "function": {"name": "..."}}.')
        if function["name"] not in functions:
            declared = ", ".join(sorted(functions)) or "none"
            raise _refuse(f"{name}.function.name", f"names no function tool of this run (declared: {declared}).")
        return {"type": "function", "function": {"name": function["name"]}}
    if kind in ("file_search", "code_interpreter") and set(value) == {"type"}:
        if kind not in hosted:
            raise _refuse(name, f"names {kind}, which this run does not have.")
        return {"type": kind}
    raise _refuse(name, 'must be a word, {"type": "function", "function": {"name": "..."}} or {"type": "file_search"}.')


def _flag(body: dict, name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise _refuse(name, "must be true or false.")
    return value


def _overrides(body: dict, assistant: AssistantType) -> dict:
    """`instructions` and `model`, only where the type's ALLOW_OVERRIDES names them."""
    chosen = {}
    for name in OVERRIDABLE:
        if body.get(name) is None:
            continue
        if name not in assistant.allow_overrides:
            raise _refuse(
                name,
                f"cannot be set per run for assistant type '{assistant.name}': the operator configures it "
                f"(ASSISTANT_{assistant.name.upper()}_ALLOW_OVERRIDES).",
            )
        chosen[name] = _text(body, name, MAX_INSTRUCTIONS_CHARS)
    if "model" in chosen and not MODEL_NAME.fullmatch(chosen["model"]):
        raise _refuse("model", "must be a model name (letters, digits, '.', '_', ':' or '-', at most 128).")
    return chosen


def run_tools(value, assistant: AssistantType) -> tuple[Tool, ...]:
    """The client tools of a run: the type's declared ones, then those of the body (`tools`).
    A name declared twice (also by a server tool) is a 400."""
    try:
        body_tools = client_tools(value, assistant.tools + assistant.client_tools)
    except ToolError as exc:
        raise bad_request(str(exc)) from None
    merged = assistant.client_tools + body_tools
    if len(merged) > MAX_CLIENT_TOOLS:
        raise _refuse("tools", f"with the type's own client tools makes {len(merged)}, at most {MAX_CLIENT_TOOLS}.")
    return merged


def parse(
    body: dict,
    assistant: AssistantType,
    *,
    engine: str,
    functions: set[str],
    hosted: set[str] = frozenset(),
    max_chars: int = 32_768,
    max_pairs: int = 16,
) -> RunOptions:
    """The run's settings from its body; a 400 naming the parameter for any value that cannot be
    used, including those the `engine` ("responses" or "assistants") cannot honour. `functions`
    are the names of the run's function tools, `hosted` the types of its hosted tools."""
    options = RunOptions(
        additional_instructions=_text(body, "additional_instructions", max_chars),
        additional_messages=_messages(body.get("additional_messages"), max_chars, max_pairs),
        response_format=_response_format(body.get("response_format"), max_chars),
        max_completion_tokens=_tokens(body, "max_completion_tokens"),
        max_prompt_tokens=_tokens(body, "max_prompt_tokens"),
        truncation_strategy=_truncation(body.get("truncation_strategy")),
        tool_choice=_tool_choice(body.get("tool_choice"), functions, set(hosted)),
        parallel_tool_calls=_flag(body, "parallel_tool_calls"),
        metadata=_validation().metadata(body.get("metadata"), max_pairs) or {},
        **_overrides(body, assistant),
    )
    if engine == "responses":
        refuse_unavailable_on_responses(options)
    return options


def refuse_unavailable_on_responses(options: RunOptions) -> None:
    """A 400 for the settings the Responses API cannot honour (it has no equivalent for them)."""
    if options.max_prompt_tokens is not None:
        raise bad_request(NO_MAX_PROMPT_TOKENS)
    if (options.truncation_strategy or {}).get("type") == "last_messages":
        raise bad_request(NO_LAST_MESSAGES)


def instructions(options: RunOptions, type_instructions: str | None) -> str | None:
    """The run's instructions: the type's (or the allowed override), then `additional_instructions`
    after a blank line."""
    base = options.instructions if options.instructions is not None else type_instructions
    parts = [part for part in (base, options.additional_instructions) if part]
    return "\n\n".join(parts) if parts else None


def text_format(response_format) -> dict | None:
    """The Responses `text.format` of an Assistants `response_format`; json_schema is flattened."""
    if response_format is None or response_format == "auto":
        return None
    if response_format["type"] != "json_schema":
        return {"type": response_format["type"]}
    return {"type": "json_schema", **response_format["json_schema"]}


def responses_tool_choice(tool_choice):
    """The Responses shape of an Assistants `tool_choice`: a function's name is not nested."""
    if isinstance(tool_choice, dict) and tool_choice["type"] == "function":
        return {"type": "function", "name": tool_choice["function"]["name"]}
    return tool_choice


def responses_fields(options: RunOptions, type_instructions: str | None, *, continuation: bool = False) -> dict:
    """The fields of a Responses create for this run (besides model, conversation, input and tools).

    Truncation is always "auto", the Assistants default (the Responses default, "disabled", fails a
    long thread). A `continuation` (the response after tool outputs) drops a forced `tool_choice`:
    forcing a call again would loop, so the model chooses (as the OpenAI Agents SDK resets it)."""
    refuse_unavailable_on_responses(options)
    fields: dict = {"truncation": "auto"}
    if options.model is not None:
        fields["model"] = options.model
    joined = instructions(options, type_instructions)
    if joined is not None:
        fields["instructions"] = joined
    text = text_format(options.response_format)
    if text is not None:
        fields["text"] = {"format": text}
    if options.max_completion_tokens is not None:
        fields["max_output_tokens"] = options.max_completion_tokens
    choice = options.tool_choice
    if continuation and (choice == "required" or isinstance(choice, dict)):
        choice = None
    if choice is not None:
        fields["tool_choice"] = responses_tool_choice(choice)
    if options.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = options.parallel_tool_calls
    return fields


def assistants_fields(options: RunOptions) -> dict:
    """The run create fields of the Assistants API, as that API takes them (only those sent)."""
    fields = {
        "additional_instructions": options.additional_instructions,
        "response_format": options.response_format,
        "max_completion_tokens": options.max_completion_tokens,
        "max_prompt_tokens": options.max_prompt_tokens,
        "truncation_strategy": options.truncation_strategy,
        "tool_choice": options.tool_choice,
        "parallel_tool_calls": options.parallel_tool_calls,
        "instructions": options.instructions,
        "model": options.model,
        "metadata": options.metadata or None,
        "additional_messages": [dict(m) for m in options.additional_messages] or None,
    }
    return {name: value for name, value in fields.items() if value is not None}


def incomplete_reason(upstream_reason: str | None) -> str | None:
    """A run's `incomplete_details.reason` for the upstream's: Responses says `max_output_tokens`."""
    return "max_completion_tokens" if upstream_reason == "max_output_tokens" else upstream_reason


def reported(options: RunOptions, run: dict) -> dict:
    """The run object as it must show: the settings applied to it, and its incomplete reason in
    Assistants terms."""
    shown = {
        **run,
        "response_format": options.response_format if options.response_format is not None else "auto",
        "tool_choice": options.tool_choice if options.tool_choice is not None else "auto",
        "parallel_tool_calls": options.parallel_tool_calls is not False,
        "truncation_strategy": dict(options.truncation_strategy or DEFAULT_TRUNCATION),
        "max_prompt_tokens": options.max_prompt_tokens,
        "max_completion_tokens": options.max_completion_tokens,
        "metadata": dict(options.metadata),
    }
    if options.model is not None:
        shown["model"] = options.model
    details = run.get("incomplete_details")
    if details:
        shown["incomplete_details"] = {**details, "reason": incomplete_reason(details.get("reason"))}
    return shown


def carried(shown: dict, upstream: dict) -> dict:
    """`upstream` (a newer look at a run) with the settings `shown` (the run as recorded) reports."""
    run = dict(upstream, **{name: shown[name] for name in REPORTED if name in shown})
    details = upstream.get("incomplete_details")
    if details:
        run["incomplete_details"] = {**details, "reason": incomplete_reason(details.get("reason"))}
    return run


def to_record(options: RunOptions) -> dict:
    """The settings as JSON, for a run that goes on in another request (see `from_record`)."""
    return asdict(options)


def from_record(recorded: dict | None) -> RunOptions:
    """The settings `to_record` kept (none for a run recorded before they were)."""
    if not recorded:
        return RunOptions()
    return RunOptions(**{**recorded, "additional_messages": tuple(recorded.get("additional_messages") or ())})

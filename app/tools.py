"""Function tools: the server's own (Python functions it runs) and the client's (declared per run).

`ASSISTANT_<TYPE>_TOOLS` lists import paths `package.module:function`. Each function is
one tool: its name, the first paragraph of its docstring as the description, and a JSON
schema of its parameters built by pydantic from the type hints. The model's arguments
are untrusted input: they are validated against that schema before the handler runs.
"""

from __future__ import annotations

import importlib
import inspect
import json
import logging
import re
import threading
import time
import typing
from collections.abc import Callable
from dataclasses import dataclass

import pydantic

log = logging.getLogger("app.tools")

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_CLIENT_TOOLS = 128


class ToolError(ValueError):
    """A tool cannot be loaded or declared; the message says why."""


@dataclass(frozen=True)
class Tool:
    """A function tool as the model sees it; `handler` and `arguments` only for server tools."""

    name: str
    description: str = ""
    parameters: dict | None = None
    strict: bool = False
    handler: Callable | None = None
    arguments: type[pydantic.BaseModel] | None = None

    def declaration(self) -> dict:
        """Name, description, parameters and strict: what both upstream APIs declare."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters or {"type": "object", "properties": {}},
            "strict": self.strict,
        }


def _without_titles(schema):
    """pydantic's schema without its `title` keys, which only repeat the names."""
    if isinstance(schema, dict):
        return {k: _without_titles(v) for k, v in schema.items() if k != "title" or not isinstance(v, str)}
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def tool_from_function(function: Callable) -> Tool:
    """The tool a function makes; ToolError if a parameter lacks a type hint."""
    signature = inspect.signature(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception as exc:  # a hint that names something undefined
        raise ToolError(f"{function.__name__}: unreadable type hints ({exc})") from None
    fields = {}
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise ToolError(f"{function.__name__}: *{parameter.name} cannot be described to the model")
        if parameter.name not in hints:
            raise ToolError(f"{function.__name__}: parameter '{parameter.name}' has no type hint")
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (hints[parameter.name], default)
    model = pydantic.create_model(
        f"{function.__name__}_arguments", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )
    try:
        schema = _without_titles(model.model_json_schema())
    except pydantic.PydanticUserError as exc:
        raise ToolError(f"{function.__name__}: no JSON schema for its parameters ({exc})") from None
    schema["additionalProperties"] = False
    # OpenAI's strict mode wants every property required and every object closed; nested
    # models (`$defs`) may not be, so only flat signatures without defaults are strict.
    strict = "$defs" not in schema and len(schema.get("required", [])) == len(fields)
    doc = inspect.getdoc(function) or ""
    return Tool(
        name=function.__name__,
        description=doc.split("\n\n")[0].replace("\n", " ").strip(),
        parameters=schema,
        strict=strict,
        handler=function,
        arguments=model,
    )


def load_tools(paths: str) -> tuple[Tool, ...]:
    """The tools of a comma-separated list of `package.module:function` paths; ToolError if any fails."""
    tools: dict[str, Tool] = {}
    for path in filter(None, (p.strip() for p in paths.split(","))):
        module_name, sep, attribute = path.partition(":")
        if not sep or not module_name or not attribute:
            raise ToolError(f"{path!r} is not of the form package.module:function")
        try:
            function = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError) as exc:
            raise ToolError(f"cannot import {path}: {exc}") from None
        if not callable(function):
            raise ToolError(f"{path} is not a function")
        tool = tool_from_function(function)
        if not NAME.fullmatch(tool.name):
            raise ToolError(f"{path}: {tool.name!r} is not a usable tool name")
        if tool.name in tools:
            raise ToolError(f"two tools are named {tool.name!r}")
        tools[tool.name] = tool
    return tuple(tools.values())


def client_tools(value, server_tools: tuple[Tool, ...]) -> tuple[Tool, ...]:
    """The function tools a run body declares, in the Assistants shape; ToolError if invalid."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ToolError("'tools' must be an array.")
    if len(value) > MAX_CLIENT_TOOLS:
        raise ToolError(f"'tools' may hold at most {MAX_CLIENT_TOOLS} tools.")
    server_names = {t.name for t in server_tools}
    declared: dict[str, Tool] = {}
    for index, entry in enumerate(value):
        where = f"'tools[{index}]'"
        if (
            not isinstance(entry, dict)
            or entry.get("type") != "function"
            or not isinstance(entry.get("function"), dict)
        ):
            raise ToolError(f'{where}: only function tools are supported: {{"type": "function", "function": {{...}}}}.')
        function = entry["function"]
        name = function.get("name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise ToolError(f"{where}: 'name' must be 1-64 characters of A-Z a-z 0-9 _ -.")
        if name in declared or name in server_names:
            raise ToolError(f"{where}: a tool named '{name}' is already declared.")
        parameters = function.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise ToolError(f"{where}: 'parameters' must be a JSON Schema object.")
        description = function.get("description", "")
        if not isinstance(description, str):
            raise ToolError(f"{where}: 'description' must be a string.")
        strict = function.get("strict") or False
        if not isinstance(strict, bool):
            raise ToolError(f"{where}: 'strict' must be a boolean.")
        declared[name] = Tool(name=name, description=description, parameters=parameters, strict=strict)
    return tuple(declared.values())


def _short(error: pydantic.ValidationError) -> str:
    problems = []
    for item in error.errors()[:5]:
        where = ".".join(str(part) for part in item["loc"]) or "arguments"
        problems.append(f"{where}: {item['msg']}")
    return "; ".join(problems)


def call(tool: Tool, arguments: str, run_id: str) -> str:
    """Run one call of a server tool; what the model reads back, also when it fails."""
    try:
        parsed = tool.arguments.model_validate_json(arguments or "{}")
    except pydantic.ValidationError as exc:
        log.warning("run %s: tool %s got invalid arguments: %s", run_id, tool.name, _short(exc))
        return f"Error: invalid arguments for {tool.name}: {_short(exc)}"
    try:
        result = tool.handler(**{name: getattr(parsed, name) for name in type(parsed).model_fields})
    except Exception as exc:
        log.exception("run %s: tool %s raised", run_id, tool.name)
        return f"Error: {type(exc).__name__}: {exc}"
    if isinstance(result, str):
        return result
    if isinstance(result, pydantic.BaseModel):
        return result.model_dump_json()
    return json.dumps(result, default=str)


def call_all(calls: list[tuple[Tool, dict]], deadline: float, run_id: str) -> dict[str, str] | None:
    """The outputs of one turn's calls, run side by side, keyed by call ID; None if the
    deadline (time.monotonic()) passes first. Calls still running then are left to finish
    unheard: a thread cannot be stopped from outside."""
    outputs: dict[str, str] = {}

    def work(tool: Tool, tool_call: dict) -> None:
        outputs[tool_call["id"]] = call(tool, tool_call["function"]["arguments"], run_id)

    workers = [threading.Thread(target=work, args=pair, name=f"tool-{pair[0].name}", daemon=True) for pair in calls]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            log.warning("run %s: tool %s still running at the deadline", run_id, worker.name.removeprefix("tool-"))
            return None
    return outputs

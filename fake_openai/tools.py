"""Function calling: which calls the scripted model makes next, and which calls still lack outputs."""

import json

from .errors import bad_request
from .state import alnum_id, hex_id


def function_names(tools):
    """The names of the function tools a request declares."""
    names = set()
    for tool in tools or []:
        if isinstance(tool, dict) and tool.get("type") == "function":
            name = tool.get("name") or (tool.get("function") or {}).get("name")
            if name:
                names.add(name)
    return names


def check_declared(script, declared):
    """A scripted call of a tool the request does not declare is a scripting error (400)."""
    for name, _ in script.calls:
        if name not in declared:
            raise bad_request(f"fake directive: call={name} but the request declares no function tool named '{name}'")


def next_calls(script, done, parallel):
    """The calls of the model's next turn after `done` calls, or [] when it answers instead."""
    planned = script.planned_calls()
    if done >= len(planned):
        return []
    size = len(script.calls) if (parallel and script.calls) else 1
    return planned[done : done + size]


def function_call_item(name, arguments):
    """A Responses `function_call` output item."""
    return {
        "type": "function_call",
        "id": hex_id("fc_"),
        "call_id": alnum_id("call_"),
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def since_last_user(items):
    """The items after the newest user message."""
    for index in range(len(items) - 1, -1, -1):
        item = items[index]
        if item["type"] == "message" and item["role"] == "user":
            return items[index + 1 :]
    return list(items)


def results(items, history):
    """[(tool name, output)] of the function_call_output items among `items`, named from `history`."""
    names = {item["call_id"]: item["name"] for item in history if item["type"] == "function_call"}
    return [
        (names.get(item["call_id"], "?"), item["output"]) for item in items if item["type"] == "function_call_output"
    ]


def first_open_call(items):
    """The call_id of the first function_call without a function_call_output, or None."""
    answered = {item["call_id"] for item in items if item["type"] == "function_call_output"}
    for item in items:
        if item["type"] == "function_call" and item["call_id"] not in answered:
            return item["call_id"]
    return None


def check_outputs_match_calls(items):
    """A function_call_output whose call_id no function_call has is a 400 (message: a guess)."""
    calls = {item["call_id"] for item in items if item["type"] == "function_call"}
    for item in items:
        if item["type"] == "function_call_output" and item["call_id"] not in calls:
            raise bad_request(
                f"No tool call found for function call output with call_id {item['call_id']}.", param="input"
            )


def output_text(value):
    """A function_call_output's `output` as text (a string, or the JSON of anything else)."""
    return value if isinstance(value, str) else json.dumps(value)

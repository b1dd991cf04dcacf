"""Assistants v2 run steps: what a run did, step by step. Every function expects `fake.lock` to be held.

An answering turn with a file_search searches when the run starts: a `tool_calls` step
(one `file_search` call) completed at once. A turn that calls functions adds a
`tool_calls` step of `function` calls, `in_progress` while the run waits for the outputs,
completed (outputs filled) when they are given. The answer adds a completed
`message_creation` step naming the message. A run that ends otherwise ends its open step
the same way (`cancelled`, `failed`, `expired`).
"""

from . import knowledge, scripting
from .errors import invalid_value, not_found
from .listing import list_body, paginate, parse_list_params
from .state import alnum_id, epoch

INCLUDE_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"
ENDED = {"cancelled": "cancelled_at", "failed": "failed_at", "expired": "expired_at"}


def _step(run, kind, details, at):
    step = {
        "id": alnum_id("step_"),
        "object": "thread.run.step",
        "created_at": int(at),
        "run_id": run.id,
        "assistant_id": run.assistant_id,
        "thread_id": run.thread.id,
        "type": kind,
        "status": "in_progress",
        "cancelled_at": None,
        "completed_at": None,
        "expired_at": None,
        "expires_at": epoch(run.expires_at),
        "failed_at": None,
        "last_error": None,
        "step_details": details,
        "usage": None,
        "metadata": {},
    }
    run.steps.append(step)
    return step


def _complete(step, at, prompt, completion):
    step.update(
        status="completed",
        completed_at=int(at),
        expires_at=None,
        usage={"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
    )


def started(run, at):
    """A turn starts: an answering turn with a file_search searches now (a completed tool_calls step)."""
    if run.search is None or run.calls or run.search.query is not None:
        return
    run.search.run(run.script.text)
    call = run.search.tool_call(alnum_id("call_"))
    step = _step(run, "tool_calls", {"type": "tool_calls", "tool_calls": [call]}, at)
    _complete(step, at, run.search.input_tokens(), scripting.count_tokens(run.script.text))


def settled(run, at):
    """A turn ended: the function calls step, the message_creation step, or the end of an open step."""
    if run.status == "requires_action":
        calls = [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments, "output": None}}
            for call_id, (name, arguments) in run.open_calls.items()
        ]
        _step(run, "tool_calls", {"type": "tool_calls", "tool_calls": calls}, at)
        return
    if run.status in ("completed", "incomplete"):
        message = run.thread.messages[-1]
        details = {"type": "message_creation", "message_creation": {"message_id": message["id"]}}
        text = message["content"][0]["text"]["value"]
        step = _step(run, "message_creation", details, at)
        _complete(step, at, scripting.count_tokens(run.script.text), scripting.count_tokens(text))
        knowledge.add_usage(run.search, run.usage, "prompt_tokens")
        return
    for step in run.steps:
        if step["status"] == "in_progress" and run.status in ENDED:
            step.update(status=run.status, expires_at=None, **{ENDED[run.status]: int(at)})
            if run.status == "failed":
                step["last_error"] = dict(run.last_error)


def outputs_given(run, outputs, at):
    """Tool outputs were submitted: the open function step completes with them."""
    given = {output["tool_call_id"]: output.get("output", "") for output in outputs}
    for step in run.steps:
        calls = step["step_details"].get("tool_calls") or []
        if step["status"] == "in_progress" and calls and calls[0]["type"] == "function":
            for call in calls:
                call["function"]["output"] = given.get(call["id"])
            _complete(step, at, scripting.count_tokens(run.script.text), len(calls))


def _run(fake, thread_id, run_id):
    thread = fake.threads.get(thread_id)
    if thread is None:
        raise not_found(f"No thread found with id '{thread_id}'.")
    run = fake.runs.get(run_id)
    if run is None or run.thread is not thread:
        raise not_found(f"No run found with id '{run_id}'.")
    thread.advance(fake.now())
    return run


def _include_content(args):
    wanted = args.getlist("include[]") + args.getlist("include")
    for value in wanted:
        if value != INCLUDE_CONTENT:
            raise invalid_value("include[]", value, (INCLUDE_CONTENT,))
    return bool(wanted)


def _shown(step, with_content):
    """A step as the API answers it: file_search results lose `content` unless it was asked for."""
    if with_content or step["type"] != "tool_calls":
        return step
    calls = []
    for call in step["step_details"]["tool_calls"]:
        if call["type"] == "file_search":
            results = [{k: v for k, v in r.items() if k != "content"} for r in call["file_search"]["results"]]
            call = {**call, "file_search": {**call["file_search"], "results": results}}
        calls.append(call)
    return {**step, "step_details": {"type": "tool_calls", "tool_calls": calls}}


def list_steps(fake, thread_id, run_id, args):
    """GET /v1/threads/{t}/runs/{r}/steps: limit, order (default desc), after, before, include[]."""
    params = parse_list_params(args)
    with_content = _include_content(args)
    run = _run(fake, thread_id, run_id)
    page, has_more = paginate(run.steps, **params)
    return list_body([_shown(step, with_content) for step in page], has_more)


def get_step(fake, thread_id, run_id, step_id, args):
    """GET /v1/threads/{t}/runs/{r}/steps/{s}: include[]."""
    with_content = _include_content(args)
    run = _run(fake, thread_id, run_id)
    for step in run.steps:
        if step["id"] == step_id:
            return _shown(step, with_content)
    raise not_found(f"No run step found with id '{step_id}'.")

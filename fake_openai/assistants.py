"""Assistants v2: threads, messages and runs. Every function expects `fake.lock` to be held."""

from . import attachments, formats, knowledge, run_steps, scripting, tools
from .errors import ApiError, bad_request, check_known_params, invalid_type, invalid_value, missing_param, not_found
from .listing import list_body, paginate
from .state import FAILURE_MESSAGE, Holder, Job, alnum_id, epoch

THREAD_PARAMS = {"messages", "metadata", "tool_resources"}
MESSAGE_PARAMS = {"role", "content", "attachments", "metadata"}
RUN_PARAMS = {
    "assistant_id",
    "model",
    "instructions",
    "additional_instructions",
    "additional_messages",
    "tools",
    "metadata",
    "temperature",
    "top_p",
    "stream",
    "max_prompt_tokens",
    "max_completion_tokens",
    "truncation_strategy",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "reasoning_effort",
}


class Thread(Holder):
    """A thread: its messages oldest first, and the run currently holding it (if any)."""

    def __init__(self, now, metadata):
        super().__init__(alnum_id("thread_"), now, metadata)
        self.messages = []
        self.vector_store_id = None  # its file_search store (see `attachments`)
        self.owns_store = False
        self.code_file_ids = []

    def to_api(self):
        """The OpenAI `thread` object."""
        return {
            "id": self.id,
            "object": "thread",
            "created_at": self.created_at,
            "metadata": dict(self.metadata),
            "tool_resources": attachments.shown(self),
        }

    def latest_user_text(self):
        """The text of the newest user message ("" if none)."""
        for message in reversed(self.messages):
            if message["role"] == "user":
                return "\n".join(part["text"]["value"] for part in message["content"])
        return ""


def make_message(thread_id, role, texts, now, run=None, metadata=None, incomplete=False):
    """A `thread.message` dict; stored as is and never mutated afterwards."""
    at = int(now)
    return {
        "id": alnum_id("msg_"),
        "object": "thread.message",
        "created_at": at,
        "assistant_id": run.assistant_id if run else None,
        "thread_id": thread_id,
        "run_id": run.id if run else None,
        "role": role,
        "content": [{"type": "text", "text": {"value": text, "annotations": []}} for text in texts],
        "attachments": [],
        "metadata": metadata or {},
        "status": "incomplete" if incomplete else "completed",
        "completed_at": None if incomplete else at,
        "incomplete_at": at if incomplete else None,
        "incomplete_details": {"reason": "max_tokens"} if incomplete else None,
    }


class Run(Job):
    """A run on a thread; its status follows its script over wall-clock time."""

    def __init__(self, thread, body, script, now, label, expiry_seconds):
        super().__init__(alnum_id("run_"), script, now)
        self.expires_at = now + expiry_seconds
        self.parallel_tool_calls = body.get("parallel_tool_calls") is not False
        self.calls = tools.next_calls(script, 0, self.parallel_tool_calls)  # of the current turn
        self.done_calls = 0
        self.open_calls = {}  # call id -> tool name, while requires_action
        self.results = []  # [(tool name, output)] submitted so far
        self.thread = thread
        self.label = label
        self.assistant_id = body["assistant_id"]
        self.model = body.get("model") or "gpt-4o"
        self.instructions = _instructions(body)
        self.tools = body.get("tools") or []
        self.metadata = body.get("metadata") or {}
        self.temperature = body.get("temperature", 1.0)
        self.top_p = body.get("top_p", 1.0)
        self.max_completion_tokens = body.get("max_completion_tokens")
        self.max_prompt_tokens = body.get("max_prompt_tokens")
        self.truncation_strategy = formats.check_truncation_strategy(body.get("truncation_strategy"))
        self.response_format = body.get("response_format") or "auto"
        self.text_format = formats.assistants_format(body.get("response_format"))
        self.tool_choice = body.get("tool_choice") or "auto"
        self.required_action = None
        self.last_error = None
        self.incomplete_details = None
        self.usage = None
        self.completed_at = self.failed_at = self.cancelled_at = self.expired_at = None
        self.search = None  # a knowledge.RunSearch when the run has file_search
        self.steps = []  # run steps, oldest first (see `run_steps`)

    def on_start(self):
        run_steps.started(self, self.start_at)

    def settle(self, outcome, at):
        super().settle(outcome, at)
        run_steps.settled(self, at)

    def advance(self, now):
        """As a job does; a run left waiting for tool outputs expires at `expires_at`."""
        if self.status == "requires_action" and self.cancel_at is None and now >= self.expires_at:
            self.settle("expired", self.expires_at)
            return
        super().advance(now)

    def finish(self, outcome, at):
        if self.calls and outcome not in ("cancelled", "expired", "never"):
            self.status = "requires_action"
            self.open_calls = {alnum_id("call_"): call for call in self.calls}
            self.required_action = _required_action(self.open_calls)
            return
        if outcome == "requires_action":
            outcome = "completed"
        self.status = outcome
        self.required_action = None
        reply = ""
        if outcome in ("completed", "incomplete"):
            reply, outcome = self._reply(outcome)
            self.status = outcome
            partial = outcome == "incomplete"
            message = make_message(self.thread.id, "assistant", [reply], at, run=self, incomplete=partial)
            message["content"][0]["text"]["annotations"] = knowledge.message_annotations(self.search, reply)
            self.thread.messages.append(message)
            self.completed_at = at
            if partial:
                self.incomplete_details = {"reason": "max_completion_tokens"}
        elif outcome == "failed":
            self.failed_at = at
            self.last_error = {"code": "server_error", "message": FAILURE_MESSAGE}
        elif outcome == "cancelled":
            self.cancelled_at = at
        elif outcome == "expired":
            self.expired_at = at
        prompt, cached, completion, reasoning = scripting.usage_numbers(self.script, reply, self.max_completion_tokens)
        self.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_token_details": {"cached_tokens": cached},
            "completion_tokens_details": {"reasoning_tokens": reasoning},
        }

    def _reply(self, outcome):
        """The scripted reply in the requested format and its outcome: a reply longer than
        max_completion_tokens is cut there, and the run ends incomplete."""
        partial = outcome == "incomplete"
        results = self.results + knowledge.results(self.search, markers=True)
        text = formats.reply(self.text_format, self.script, self.label, partial, results)
        if not partial and formats.over(text, self.max_completion_tokens):
            return formats.cut(text, self.max_completion_tokens), "incomplete"
        return text, outcome

    def to_api(self):
        """The OpenAI `thread.run` object as of the last `advance`."""
        if self.status == "expired":
            expires_at = self.expired_at
        elif self.active:
            expires_at = self.expires_at
        else:
            expires_at = None
        return {
            "id": self.id,
            "object": "thread.run",
            "created_at": epoch(self.created),
            "assistant_id": self.assistant_id,
            "thread_id": self.thread.id,
            "status": self.status,
            "started_at": epoch(self.started_at),
            "expires_at": epoch(expires_at),
            "cancelled_at": epoch(self.cancelled_at),
            "failed_at": epoch(self.failed_at),
            "completed_at": epoch(self.completed_at),
            "required_action": self.required_action,
            "last_error": self.last_error,
            "model": self.model,
            "instructions": self.instructions,
            "tools": self.tools,
            "metadata": self.metadata,
            "incomplete_details": self.incomplete_details,
            "usage": self.usage,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_prompt_tokens": self.max_prompt_tokens,
            "max_completion_tokens": self.max_completion_tokens,
            "truncation_strategy": self.truncation_strategy,
            "response_format": self.response_format,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
        }


def _required_action(open_calls):
    calls = [
        {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}
        for call_id, (name, arguments) in open_calls.items()
    ]
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": calls}}


def _instructions(body):
    """The run's instructions: its `instructions` (the fake keeps no assistant's), then
    `additional_instructions` after a blank line (the separator is a guess)."""
    parts = [part for part in (body.get("instructions"), body.get("additional_instructions")) if part]
    return "\n\n".join(parts)


def _check_run_knobs(body):
    """The 400s of a bad token limit, response_format, truncation_strategy or tool_choice."""
    for name in ("max_completion_tokens", "max_prompt_tokens"):
        formats.token_limit(body, name, formats.MIN_RUN_TOKENS)
    formats.assistants_format(body.get("response_format"))
    formats.check_truncation_strategy(body.get("truncation_strategy"))
    declared = tools.function_names(body["tools"]) if body.get("tools") is not None else None
    formats.check_tool_choice(
        body.get("tool_choice"), declared, lambda choice: (choice.get("function") or {}).get("name")
    )
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid_type("parallel_tool_calls", "a boolean", parallel)


def _metadata(body):
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise invalid_type("metadata", "an object", metadata)
    return metadata


def _message_texts(content, param="content"):
    """The text parts of a message `content` (a string or a list of text parts)."""
    if isinstance(content, str):
        return [content]
    if not isinstance(content, list) or not content:
        raise invalid_type(param, "a string or an array of content parts", content)
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
            raise bad_request(
                f"Invalid '{param}[{index}]': the fake only supports text parts {{type: 'text', text: string}}.",
                param=f"{param}[{index}]",
            )
        texts.append(part["text"])
    return texts


def _add_user_message(fake, thread, body, param_prefix=""):
    if not isinstance(body, dict):
        raise invalid_type(param_prefix or "body", "an object", body)
    check_known_params(body, MESSAGE_PARAMS)
    role = body.get("role")
    if role is None:
        raise missing_param(param_prefix + "role")
    if role not in ("user", "assistant"):
        raise invalid_value(param_prefix + "role", role, ("user", "assistant"))
    if "content" not in body:
        raise missing_param(param_prefix + "content")
    texts = _message_texts(body["content"], param_prefix + "content")
    attached = attachments.check_attachments(fake, body.get("attachments"), param_prefix + "attachments")
    message = make_message(thread.id, role, texts, fake.now(), metadata=_metadata(body))
    message["attachments"] = attached
    attachments.attach(fake, thread, attached)
    thread.messages.append(message)
    return message


def create_thread(fake, body):
    """POST /v1/threads."""
    check_known_params(body, THREAD_PARAMS)
    messages = body.get("messages") or []
    if not isinstance(messages, list):
        raise invalid_type("messages", "an array", messages)
    resources = attachments.check_tool_resources(fake, body.get("tool_resources"))
    thread = Thread(fake.now(), _metadata(body))
    try:
        attachments.apply_tool_resources(fake, thread, resources)
        for index, message in enumerate(messages):
            _add_user_message(fake, thread, message, f"messages[{index}].")
    except ApiError:
        attachments.discard(fake, thread)
        raise
    fake.threads[thread.id] = thread
    return thread.to_api()


def find_thread(fake, thread_id):
    """The thread with this id, or the 404 OpenAI answers."""
    thread = fake.threads.get(thread_id)
    if thread is None:
        raise not_found(f"No thread found with id '{thread_id}'.")
    return thread


def get_thread(fake, thread_id):
    """GET /v1/threads/{id}."""
    return find_thread(fake, thread_id).to_api()


def delete_thread(fake, thread_id):
    """DELETE /v1/threads/{id}."""
    find_thread(fake, thread_id)
    del fake.threads[thread_id]
    return {"id": thread_id, "object": "thread.deleted", "deleted": True}


def _refuse_if_locked(fake, thread):
    thread.advance(fake.now())
    if thread.active is not None:
        raise bad_request(f"Can't add messages to {thread.id} while a run {thread.active.id} is active.")


def create_message(fake, thread_id, body):
    """POST /v1/threads/{id}/messages."""
    thread = find_thread(fake, thread_id)
    _refuse_if_locked(fake, thread)
    return _add_user_message(fake, thread, body)


def list_messages(fake, thread_id, params, run_id=None):
    """GET /v1/threads/{id}/messages."""
    thread = find_thread(fake, thread_id)
    thread.advance(fake.now())
    messages = thread.messages
    if run_id:
        messages = [m for m in messages if m["run_id"] == run_id]
    return list_body(*paginate(messages, **params))


def create_run(fake, thread_id, body):
    """POST /v1/threads/{id}/runs."""
    check_known_params(body, RUN_PARAMS)
    thread = find_thread(fake, thread_id)
    assistant_id = body.get("assistant_id")
    if assistant_id is None:
        raise missing_param("assistant_id")
    if (
        not isinstance(assistant_id, str)
        or not assistant_id.startswith("asst_")
        or assistant_id in fake.config.unknown_assistants
    ):
        raise not_found(f"No assistant found with id '{assistant_id}'.")
    if body.get("stream"):
        raise bad_request("streaming is not supported by the fake", param="stream")
    _check_run_knobs(body)
    thread.advance(fake.now())
    if thread.active is not None:
        raise bad_request(f"Thread {thread.id} already has an active run {thread.active.id}.")
    extra = body.get("additional_messages") or []
    if not isinstance(extra, list):
        raise invalid_type("additional_messages", "an array", extra)
    for index, message in enumerate(extra):
        _add_user_message(fake, thread, message, f"additional_messages[{index}].")
    script = scripting.parse(thread.latest_user_text(), fake.config.default_duration)
    run = Run(thread, body, script, fake.now(), fake.label, fake.config.run_expiry_seconds)
    run.tools = knowledge.run_tools(fake, assistant_id, body)
    if run.calls and not script.legacy_call and body.get("tools") is not None:
        # Without `tools` the run uses the assistant's own tools, which the fake cannot see.
        tools.check_declared(script, tools.function_names(body["tools"]))
    run.search = knowledge.run_search(fake, assistant_id, thread, run.tools)
    fake.runs[run.id] = run
    fake.add_job(run)
    thread.active = run
    return run.to_api()


def _find_run(fake, thread_id, run_id):
    thread = find_thread(fake, thread_id)
    run = fake.runs.get(run_id)
    if run is None or run.thread is not thread:
        raise not_found(f"No run found with id '{run_id}'.")
    thread.advance(fake.now())
    return run


def list_runs(fake, thread_id, params):
    """GET /v1/threads/{id}/runs: the thread's runs, newest first by default."""
    thread = find_thread(fake, thread_id)
    thread.advance(fake.now())
    runs = [run.to_api() for run in fake.runs.values() if run.thread is thread]
    return list_body(*paginate(runs, **params))


def get_run(fake, thread_id, run_id):
    """GET /v1/threads/{id}/runs/{run_id}."""
    return _find_run(fake, thread_id, run_id).to_api()


def cancel_run(fake, thread_id, run_id):
    """POST /v1/threads/{id}/runs/{run_id}/cancel: `cancelling` now, `cancelled` cancel_delay later."""
    run = _find_run(fake, thread_id, run_id)
    if run.status not in ("queued", "in_progress", "requires_action"):
        raise bad_request(f"Cannot cancel run with status '{run.status}'.")
    run.status = "cancelling"
    run.cancel_at = fake.now() + fake.config.cancel_delay
    return run.to_api()


def submit_tool_outputs(fake, thread_id, run_id, body):
    """POST /v1/threads/{id}/runs/{run_id}/submit_tool_outputs: every open call answered once."""
    check_known_params(body, {"tool_outputs", "stream"})
    run = _find_run(fake, thread_id, run_id)
    if body.get("stream"):
        raise bad_request("streaming is not supported by the fake", param="stream")
    if run.status != "requires_action":
        raise bad_request(f'Runs in status "{run.status}" do not accept tool outputs.')
    outputs = body.get("tool_outputs")
    if outputs is None:
        raise missing_param("tool_outputs")
    if not isinstance(outputs, list) or not all(isinstance(o, dict) for o in outputs):
        raise invalid_type("tool_outputs", "an array of objects", outputs)
    given = [o.get("tool_call_id") for o in outputs]
    expected = list(run.open_calls)
    if sorted(given, key=str) != sorted(expected):
        raise bad_request(f"Expected tool outputs for call_ids {expected}, got {given}", param="tool_outputs")
    for output in outputs:
        name = run.open_calls[output["tool_call_id"]][0]
        run.results.append((name, tools.output_text(output.get("output", ""))))
    run_steps.outputs_given(run, outputs, fake.now())
    run.done_calls += len(run.open_calls)
    run.open_calls = {}
    run.required_action = None
    run.calls = tools.next_calls(run.script, run.done_calls, run.parallel_tool_calls)
    run.final_at = None
    run.restart(fake.now())
    fake.changed.notify_all()
    return run.to_api()

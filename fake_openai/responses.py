"""Conversations and background Responses. Every function expects `fake.lock` to be held."""

import math

from . import events, formats, knowledge, scripting, tools
from .errors import ApiError, bad_request, check_known_params, invalid_type, invalid_value, missing_param, not_found
from .listing import list_body, paginate, parse_list_params
from .state import FAILURE_MESSAGE, Holder, Job, epoch, hex_id

CONVERSATION_PARAMS = {"items", "metadata"}
ITEMS_PARAMS = {"items"}
RESPONSE_PARAMS = {
    "model",
    "input",
    "instructions",
    "conversation",
    "background",
    "store",
    "temperature",
    "top_p",
    "metadata",
    "max_output_tokens",
    "max_tool_calls",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "text",
    "reasoning",
    "truncation",
    "user",
    "include",
    "prompt_cache_key",
    "safety_identifier",
    "service_tier",
    "stream",
    "stream_options",
    "top_logprobs",
    "previous_response_id",
    "prompt",
}
UNSUPPORTED = ("previous_response_id", "prompt")
MAX_ITEMS = 20  # per POST /v1/conversations/{id}/items and per initial conversation items
ITEM_LIST_PARAMS = {"limit", "order", "after", "include", "include[]"}  # the SDK sends include[]
MESSAGE_ROLES = ("user", "assistant", "system", "developer")
LOCKED_MESSAGE = "Another process is currently operating on this conversation. Please retry in a few seconds."


class Conversation(Holder):
    """A conversation: its items oldest first, and the response currently holding it (if any)."""

    def __init__(self, now, metadata):
        super().__init__(hex_id("conv_"), now, metadata)
        self.items = []

    def to_api(self):
        """The OpenAI `conversation` object."""
        return {"id": self.id, "object": "conversation", "created_at": self.created_at, "metadata": dict(self.metadata)}

    def refuse_if_locked(self, now):
        """The 400 OpenAI answers while a response is operating on this conversation."""
        self.advance(now)
        if self.active is not None:
            raise bad_request(LOCKED_MESSAGE, param="conversation", code="conversation_locked")


def message_item(role, text):
    """A stored message item: input_text parts, or output_text for the assistant."""
    return {
        "type": "message",
        "id": hex_id("msg_"),
        "status": "completed",
        "role": role,
        "content": [_content_part(role, text)],
    }


def _content_part(role, text):
    if role == "assistant":
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"type": "input_text", "text": text}


def _parse_items(items, param, max_items=None):
    """Turn request input items into stored conversation items (messages and tool outputs)."""
    if isinstance(items, str):
        return [message_item("user", items)]
    if not isinstance(items, list):
        raise invalid_type(param, "a string or an array of items", items)
    if max_items is not None and len(items) > max_items:
        raise bad_request(
            f"Invalid '{param}': array too long. Expected an array with maximum length {max_items}, "
            f"but got an array with length {len(items)} instead.",
            param=param,
            code="array_above_max_length",
        )
    return [_parse_item(item, f"{param}[{index}]") for index, item in enumerate(items)]


def _parse_item(item, param):
    if not isinstance(item, dict):
        raise invalid_type(param, "an object", item)
    kind = item.get("type", "message")
    if kind == "function_call_output":
        for key in ("call_id", "output"):
            if key not in item:
                raise missing_param(f"{param}.{key}")
        return {
            "type": "function_call_output",
            "id": hex_id("fco_"),
            "call_id": item["call_id"],
            "output": tools.output_text(item["output"]),
            "status": "completed",
        }
    if kind != "message":
        raise bad_request(
            f"Invalid '{param}.type': the fake only supports 'message' and 'function_call_output' items.",
            param=f"{param}.type",
        )
    role = item.get("role")
    if role is None:
        raise missing_param(f"{param}.role")
    if role not in MESSAGE_ROLES:
        raise invalid_value(f"{param}.role", role, MESSAGE_ROLES)
    content = item.get("content")
    if content is None:
        raise missing_param(f"{param}.content")
    if isinstance(content, str):
        texts = [content]
    elif isinstance(content, list):
        texts = []
        for index, part in enumerate(content):
            part_type = part.get("type") if isinstance(part, dict) else None
            if part_type not in ("input_text", "output_text") or not isinstance(part.get("text"), str):
                where = f"{param}.content[{index}]"
                raise bad_request(f"Invalid '{where}': the fake only supports text parts.", param=where)
            texts.append(part["text"])
    else:
        raise invalid_type(f"{param}.content", "a string or an array of content parts", content)
    stored = message_item(role, texts[0] if texts else "")
    stored["content"] = [_content_part(role, text) for text in texts]
    return stored


def _latest_user_text(items):
    for item in reversed(items):
        if item["type"] == "message" and item["role"] == "user":
            return "\n".join(part["text"] for part in item["content"])
    return ""


class Response(Job):
    """A background response; its status follows its script over wall-clock time.

    Its input items and output items join the conversation when it completes (or ends
    incomplete). A turn that calls tools ends `completed` with `function_call` items.
    """

    def __init__(self, conversation, body, script, items, history, now, label, search=None):
        super().__init__(hex_id("resp_"), script, now)
        self.search = search  # a knowledge.ResponseSearch when the request has a file_search tool
        self.conversation = conversation
        self.input_items = items
        self.label = label
        self.model = body["model"]
        self.instructions = body.get("instructions")
        self.temperature = body.get("temperature", 1.0)
        self.top_p = body.get("top_p", 1.0)
        self.metadata = body.get("metadata") or {}
        self.tools = body.get("tools") or []
        self.tool_choice = body.get("tool_choice") or "auto"
        self.parallel_tool_calls = body.get("parallel_tool_calls") is not False
        self.max_output_tokens = body.get("max_output_tokens")
        self.text_format = formats.text_format(body.get("text"))
        self.truncation = formats.check_truncation(body.get("truncation"))
        self.streamable = body.get("stream") is True
        turn = tools.since_last_user(history)
        done = sum(1 for item in turn if item["type"] == "function_call")
        self.calls = tools.next_calls(script, done, self.parallel_tool_calls)
        self.results = tools.results(turn, history)
        # A reply longer than max_output_tokens is cut there, and the response ends incomplete.
        self.capped = False
        if not self.calls and self.outcome == "completed":
            whole = formats.reply(self.text_format, self.script, self.label, False, self.results)
            self.capped = formats.over(whole, self.max_output_tokens)
        if self.capped:
            self.outcome = "incomplete"
        self.output = []
        self.usage = None
        self.error = None
        self.incomplete_details = None
        self.completed_at = None
        self.events = []
        self.writing = None  # the reply while it is being written (events.Writing)
        events.created(self)

    def _reply(self, partial):
        """The scripted reply in the requested text format, cut at max_output_tokens."""
        partial = partial and not self.capped
        results = self.results + knowledge.results(self.search)
        text = formats.reply(self.text_format, self.script, self.label, partial, results)
        return formats.cut(text, self.max_output_tokens)

    def next_change_at(self):
        """When the status or the written text changes next by itself (infinity if never)."""
        if self.status == "queued":
            return self.start_at
        if self.status == "in_progress" and self.outcome != "never" and self.cancel_at is None:
            return min(self.end_at, self.writing.next_due() if self.writing else math.inf)
        return math.inf

    def on_start(self):
        events.started(self)
        if self.search is not None and not self.calls:
            self.search.start(self, self.script.text)
        if not self.calls and self.outcome in ("completed", "incomplete"):
            _, item = self._answer(partial=self.outcome == "incomplete")
            index = len(self.search.output()) if self.search else 0
            self.writing = events.Writing(item, self.start_at, self.end_at, index)

    def _answer(self, partial):
        """The reply text and its message item, quoting and citing what a file search found."""
        reply = self._reply(partial)
        item = message_item("assistant", reply)
        item["content"][0]["annotations"] = knowledge.output_text_annotations(self.search, reply)
        return reply, item

    def advance(self, now):
        super().advance(now)
        if self.status == "in_progress":
            events.write_due(self, now)

    def finish(self, outcome, at):
        reply = ""
        if self.calls and outcome not in ("cancelled", "never"):
            self.output = [tools.function_call_item(name, arguments) for name, arguments in self.calls]
            outcome = "completed"
        elif outcome in ("completed", "incomplete", "requires_action"):
            partial = outcome == "incomplete"
            reply, item = self._answer(partial)
            item = self.writing.item if self.writing else item
            if partial:
                item["status"] = "incomplete"
                self.incomplete_details = {"reason": "max_output_tokens"}
            self.output = (self.search.output() if self.search else []) + [item]
            outcome = "incomplete" if partial else "completed"
        elif outcome in ("failed", "expired"):
            code = "server_error" if outcome == "failed" else "expired"
            self.error = {"code": code, "message": FAILURE_MESSAGE}
            outcome = "failed"
        self.status = outcome
        if outcome == "completed":
            self.completed_at = at
        if self.conversation is not None and outcome in ("completed", "incomplete"):
            self.conversation.items.extend(self.input_items + self.output)
        if outcome != "cancelled":
            prompt, cached, completion, reasoning = scripting.usage_numbers(self.script, reply, self.max_output_tokens)
            self.usage = {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + completion,
            }
        knowledge.add_usage(self.search, self.usage, "input_tokens")
        events.finished(self)

    def to_api(self):
        """The OpenAI `response` object as of the last `advance`."""
        return {
            "id": self.id,
            "object": "response",
            "created_at": epoch(self.created),
            "status": self.status,
            "background": True,
            "completed_at": epoch(self.completed_at),
            "conversation": {"id": self.conversation.id} if self.conversation else None,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "max_tool_calls": None,
            "model": self.model,
            "output": list(self.output),
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": None,
            "prompt_cache_key": None,
            "reasoning": {"effort": None, "summary": None},
            "safety_identifier": None,
            "service_tier": "default",
            "store": True,
            "temperature": self.temperature,
            "text": {"format": self.text_format, "verbosity": "medium"},
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_logprobs": 0,
            "top_p": self.top_p,
            "truncation": self.truncation,
            "usage": self.usage,
            "user": None,
            "metadata": self.metadata,
        }


def _metadata(body):
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise invalid_type("metadata", "an object", metadata)
    return metadata


def find_conversation(fake, conversation_id):
    """The conversation with this id, or the 404 OpenAI answers."""
    conversation = fake.conversations.get(conversation_id)
    if conversation is None:
        raise not_found(f"Conversation with id '{conversation_id}' not found.")
    return conversation


def create_conversation(fake, body):
    """POST /v1/conversations."""
    check_known_params(body, CONVERSATION_PARAMS)
    conversation = Conversation(fake.now(), _metadata(body))
    conversation.items.extend(_parse_items(body.get("items") or [], "items", MAX_ITEMS))
    fake.conversations[conversation.id] = conversation
    return conversation.to_api()


def get_conversation(fake, conversation_id):
    """GET /v1/conversations/{id}."""
    return find_conversation(fake, conversation_id).to_api()


def delete_conversation(fake, conversation_id):
    """DELETE /v1/conversations/{id}."""
    find_conversation(fake, conversation_id)
    del fake.conversations[conversation_id]
    return {"id": conversation_id, "object": "conversation.deleted", "deleted": True}


def create_items(fake, conversation_id, body):
    """POST /v1/conversations/{id}/items."""
    check_known_params(body, ITEMS_PARAMS)
    conversation = find_conversation(fake, conversation_id)
    if "items" not in body:
        raise missing_param("items")
    if not isinstance(body["items"], list):
        raise invalid_type("items", "an array", body["items"])
    items = _parse_items(body["items"], "items", MAX_ITEMS)
    conversation.refuse_if_locked(fake.now())
    conversation.items.extend(items)
    return list_body(items, False)


def list_items(fake, conversation_id, args):
    """GET /v1/conversations/{id}/items: limit, order, after, include; no `before`.

    Any other query parameter (`before` included) is a 400 `unknown_parameter` (a guess).
    """
    for name in args:
        if name not in ITEM_LIST_PARAMS:
            raise bad_request(f"Unknown parameter: '{name}'.", param=name, code="unknown_parameter")
    params = parse_list_params(args, allow_before=False)
    del params["before"]
    conversation = find_conversation(fake, conversation_id)
    conversation.advance(fake.now())
    return list_body(*paginate(conversation.items, **params))


def create_response(fake, body):
    """POST /v1/responses (background only); its items join the conversation when it completes."""
    check_known_params(body, RESPONSE_PARAMS)
    if body.get("previous_response_id") is not None and body.get("conversation") is not None:
        raise bad_request(
            "Mutually exclusive parameters: Ensure you are only providing one of: "
            "'previous_response_id' or 'conversation'.",
            param="previous_response_id",
            code="mutually_exclusive_parameters",
        )
    for name in UNSUPPORTED:
        if body.get(name) is not None:
            raise bad_request(f"the fake does not support '{name}'", param=name)
    if not body.get("model"):
        raise missing_param("model")
    if body.get("background") is not True:
        raise bad_request("the fake only supports background responses", param="background")
    if body.get("store") is False:
        raise bad_request("the fake only supports stored responses", param="store")
    _check_run_knobs(body)
    items = _parse_items(body.get("input") or [], "input")
    conversation = None
    ref = body.get("conversation")
    if ref is not None:
        conversation_id = ref.get("id") if isinstance(ref, dict) else ref
        if not isinstance(conversation_id, str):
            raise invalid_type("conversation", "a string or an object with an id", ref)
        conversation = find_conversation(fake, conversation_id)
        conversation.refuse_if_locked(fake.now())
    history = conversation.items + items if conversation else items
    tools.check_outputs_match_calls(history)
    open_call = tools.first_open_call(history)
    if open_call is not None:
        raise bad_request(f"No tool output found for function call {open_call}.", param="input")
    script = scripting.parse(_latest_user_text(history), fake.config.default_duration)
    search = knowledge.response_search(fake, body)
    response = Response(conversation, body, script, items, history, fake.now(), fake.label, search)
    if response.calls and not script.legacy_call:
        tools.check_declared(script, tools.function_names(response.tools))
    if conversation is not None:
        conversation.active = response
    fake.responses[response.id] = response
    fake.add_job(response)
    return response


def _check_run_knobs(body):
    """The 400s OpenAI answers for a bad max_output_tokens, text.format, truncation or tool_choice."""
    formats.token_limit(body, "max_output_tokens", formats.MIN_OUTPUT_TOKENS)
    formats.text_format(body.get("text"))
    formats.check_truncation(body.get("truncation"))
    declared = tools.function_names(body.get("tools"))
    formats.check_tool_choice(body.get("tool_choice"), declared, lambda choice: choice.get("name"))
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise invalid_type("parallel_tool_calls", "a boolean", parallel)


def find_response(fake, response_id):
    response = fake.responses.get(response_id)
    if response is None:
        raise not_found(f"Response with id '{response_id}' not found.")
    if response.conversation is not None:
        response.conversation.advance(fake.now())
    response.advance(fake.now())
    return response


def get_response(fake, response_id):
    """GET /v1/responses/{id}."""
    return find_response(fake, response_id).to_api()


def cancel_response(fake, response_id):
    """POST /v1/responses/{id}/cancel: `cancelled` at once; idempotent once cancelled; 400 once ended."""
    response = find_response(fake, response_id)
    if response.status == "cancelled":
        return response.to_api()
    if not response.active:
        raise ApiError(400, "Cannot cancel a completed response.")
    response.settle("cancelled", fake.now())
    if response.conversation is not None:
        response.conversation.advance(fake.now())
    fake.changed.notify_all()  # wakes open event streams
    return response.to_api()

"""The Responses + Conversations engine, the default since the Assistants API shut down.

A thread is a conversation, a message is a conversation message item, and a run
is a background response on that conversation. Everything is translated into
the Assistants v2 shapes here, once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import openai

from app import run_options
from app.citations import StreamedCitations, annotated
from app.contract import (
    FileSearch,
    MessagePage,
    Poll,
    StartedRun,
    UpstreamError,
    UpstreamNotFound,
    UpstreamRejected,
    UpstreamTransient,
    list_page,
)
from app.engines.client import QUICK_CALL_SECONDS, translated_errors
from app.engines.upstream_http import UpstreamHTTP

if TYPE_CHECKING:
    from app.runs.events import RunListener

log = logging.getLogger("app.upstream")

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "incomplete", "requires_action"})
# `error` is terminal too; it says nothing of the response, so a look follows it.
TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
# The events that name a new response, first on its creation stream.
NAMING_EVENTS = frozenset({"response.created", "response.queued", "response.in_progress"}) | TERMINAL_EVENTS
# A reply's text and its citations as they come: what only a listener that hears text needs.
TEXT_EVENTS = frozenset({"response.output_text.delta", "response.output_text.annotation.added"})
# Each read of a stream waits at most this long, so that a wait never outlives its deadline
# by more; a silent stream is then resumed (OpenAI sends a keepalive only every ~30 s).
STREAM_READ_SECONDS = 5.0
STREAM_ATTEMPTS = 30
# At most this many items per POST /conversations/{id}/items (the spec's maxItems).
MAX_ITEMS_PER_POST = 20
# A GET through the lean client is tried again this many times after a transient error (the SDK's default).
READ_RETRIES = 2
NOT_CARRIED_OUT = "This function call was not carried out: this backend does not run functions."
# What `include` asks for the file_search results' text, and the Assistants ranker name it shows.
INCLUDE_FILE_SEARCH_RESULTS = "file_search_call.results"
ASSISTANTS_RANKING = {"ranker": "default_2024_08_21", "score_threshold": 0.0}


def _json(raw) -> dict:
    """The upstream's JSON as is: skipping the SDK's models makes a poll several times cheaper."""
    return raw.http_response.json()


def _text_of(content, turn: int = 0) -> tuple[str, list[dict]]:
    """An item's text parts as one text, with the Assistants annotations of its citations."""
    if isinstance(content, str):
        return content, []
    text, annotations = "", []
    for part in content or []:
        value, cited = annotated(part.get("text") or "", part.get("annotations"), turn)
        shift = len(text)
        annotations += [dict(a, start_index=a["start_index"] + shift, end_index=a["end_index"] + shift) for a in cited]
        text += value
    return text, annotations


def _message(
    item: dict, thread_id: str, created_at: int | None, run_id=None, assistant_id=None, completed_at=None, turn=0
) -> dict:
    text, annotations = _text_of(item.get("content"), turn)
    return {
        "id": item["id"],
        "object": "thread.message",
        "created_at": created_at,
        "thread_id": thread_id,
        "role": item["role"],
        "content": [{"type": "text", "text": {"value": text, "annotations": annotations}}],
        "assistant_id": assistant_id,
        "run_id": run_id,
        "attachments": [],
        "metadata": {},
        "status": "completed",
        "completed_at": completed_at,
        "incomplete_at": None,
        "incomplete_details": None,
    }


def _usage(usage: dict | None) -> dict | None:
    """A response's usage in the Assistants shape, its cached and reasoning tokens included."""
    if usage is None:
        return None
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
        # usage: the details, as real Assistants runs send them (app/usage.py records them).
        "prompt_token_details": {"cached_tokens": (usage.get("input_tokens_details") or {}).get("cached_tokens", 0)},
        "completion_tokens_details": {
            "reasoning_tokens": (usage.get("output_tokens_details") or {}).get("reasoning_tokens", 0)
        },
    }


def _required_action(calls) -> dict:
    tool_calls = [
        {"id": c["call_id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls
    ]
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": tool_calls}}


def file_search_call(item: dict, ranking_options: dict | None = None) -> dict:
    """A Responses `file_search_call` output item as an Assistants run step's `file_search` tool call.

    Its results are the upstream's, with their text as `content` when the response was asked
    for them (`include`); without that the upstream sends none, and the list is empty.
    """
    results = [
        {
            "file_id": result.get("file_id"),
            "file_name": result.get("filename"),
            "score": result.get("score"),
            "attributes": result.get("attributes") or {},
            **({"content": [{"type": "text", "text": result["text"]}]} if result.get("text") is not None else {}),
        }
        for result in item.get("results") or []
    ]
    ranking = dict(ranking_options or ASSISTANTS_RANKING)
    return {"id": item["id"], "type": "file_search", "file_search": {"ranking_options": ranking, "results": results}}


def _run(response: dict, thread_id: str) -> dict:
    """A background response (as JSON) in the shape of an Assistants run."""
    metadata = dict(response.get("metadata") or {})
    assistant_id = metadata.pop("assistant_id", None)
    status = response["status"]
    calls = [o for o in response.get("output") or [] if o["type"] == "function_call"]
    if status == "completed" and calls:
        status = "requires_action"
    ended_at = response.get("completed_at") or (time.time() if status in FINAL_STATUSES else None)
    ended_at = int(ended_at) if ended_at is not None else None
    created_at = int(response["created_at"])
    error = response.get("error")
    incomplete = response.get("incomplete_details")
    return {
        "id": response["id"],
        "object": "thread.run",
        "created_at": created_at,
        "thread_id": thread_id,
        "assistant_id": assistant_id,
        "status": status,
        "started_at": None,  # the Responses API does not tell; the backend notes its first sight (RunPlan)
        "completed_at": ended_at if status in ("completed", "incomplete") else None,
        "cancelled_at": ended_at if status == "cancelled" else None,
        "failed_at": ended_at if status == "failed" else None,
        "expires_at": None,
        "last_error": {"code": error.get("code"), "message": error.get("message")} if error else None,
        "incomplete_details": {"reason": incomplete.get("reason")} if incomplete else None,
        "model": response.get("model"),
        "instructions": response.get("instructions"),
        "tools": [],
        "metadata": metadata,
        "usage": _usage(response.get("usage")),
        "temperature": response.get("temperature"),
        "top_p": response.get("top_p"),
        "required_action": _required_action(calls) if status == "requires_action" else None,
        "response_format": "auto",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
    }


def _function_step_call(item: dict) -> dict:
    """A `function_call` output item as a tool call of a run step (its output comes later)."""
    return {
        "id": item["call_id"],
        "type": "function",
        "function": {"name": item["name"], "arguments": item["arguments"], "output": None},
    }


# Output item type -> its tool call in a run step (app/runs/steps.py): one small function per
# kind of tool call a response makes.
STEP_CALLS = {"function_call": _function_step_call, "file_search_call": file_search_call}


def _ran_upstream(item_type: str) -> bool:
    """Whether an output item is a tool call the upstream ran itself (every kind in STEP_CALLS but
    function calls): its step ends as soon as it is made."""
    return item_type in STEP_CALLS and item_type != "function_call"


class ResponsesEngine:
    """Threads, messages and runs on the Responses and Conversations APIs.

    Runs go through the lean client `upstream` (no retries, a timeout per call);
    threads and messages through the SDK.
    """

    name = "responses"
    # A run's `additional_messages` are added to the conversation before its response (see app/runs/service.py).
    additional_messages_in_run = False
    # Conversation items carry no creation time or run, and can't be listed
    # `before` an item or by run: the backend's record fills those in.
    full_message_lists = False

    def __init__(self, client: openai.OpenAI, upstream: UpstreamHTTP | None = None):
        self.conversations = client.conversations
        self.upstream = upstream or UpstreamHTTP(str(client.base_url), client.api_key)
        timeout = getattr(client, "timeout", None)  # the SDK client's, for the reads made without it
        self.read_seconds = getattr(timeout, "read", timeout) or QUICK_CALL_SECONDS

    def create_thread(self, messages, metadata):
        with translated_errors("create thread"):
            conversation = self.conversations.create(metadata=metadata or openai.omit)
        thread = self._thread(conversation)
        # Added apart from the conversation, so that their item IDs come back.
        try:
            added = [self.add_message(thread["id"], m["role"], m["content"], m.get("metadata")) for m in messages]
        except UpstreamError:
            with contextlib.suppress(UpstreamError):
                self.delete_thread(thread["id"])
            raise
        return thread, added

    @staticmethod
    def _thread(conversation) -> dict:
        return {
            "id": conversation.id,
            "object": "thread",
            "created_at": int(conversation.created_at),
            "metadata": dict(conversation.metadata or {}),
            "tool_resources": {},
        }

    def get_thread(self, thread_id):
        with translated_errors("retrieve thread"):
            return self._thread(self.conversations.retrieve(thread_id))

    def delete_thread(self, thread_id):
        with translated_errors("delete thread"):
            self.conversations.delete(thread_id)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    def add_message(self, thread_id, role, text, metadata):
        item = {"type": "message", "role": role, "content": text}
        with translated_errors("add message"):
            created = _json(self.conversations.items.with_raw_response.create(thread_id, items=[item]))
        message = _message(created["data"][0], thread_id, int(time.time()))
        message["metadata"] = dict(metadata or {})
        return message

    def list_messages(self, thread_id, page: MessagePage):
        """Message items only, skipping tool and reasoning items across upstream pages."""
        data, after, has_more = [], page.after, True
        while has_more and len(data) <= page.limit:
            params = {"limit": 100, "order": page.order, **({"after": after} if after else {})}
            listed = self._read(f"/conversations/{thread_id}/items", params, "list messages")
            data += [_message(item, thread_id, None) for item in listed["data"] if item["type"] == "message"]
            has_more, after = bool(listed["has_more"]), listed["last_id"]
        more = len(data) > page.limit or has_more
        data = data[: page.limit]
        return list_page(data, more)

    def _read(self, path: str, params: dict, what: str) -> dict:
        """A GET through the lean client (a pass-through call: a fraction of the SDK's CPU), tried
        again up to READ_RETRIES times after a transient error, as the SDK would."""
        for attempt in range(READ_RETRIES + 1):
            try:
                return self.upstream.get(path, params, timeout=self.read_seconds, what=what)[0]
            except UpstreamTransient as exc:
                if attempt == READ_RETRIES:
                    raise
                time.sleep(min(8.0, exc.retry_after if exc.retry_after is not None else 0.5 * 2**attempt))
        raise AssertionError("unreachable")

    def _create_body(
        self, thread_id, assistant, temperature, top_p, tools=(), items=(), options=None, file_search=None
    ) -> dict:
        """A response of the run; after tool outputs (`items`), one that goes on with it."""
        body = {
            "model": assistant.model,
            "conversation": thread_id,
            "input": list(items),
            "background": True,
            "store": True,
            "metadata": {"assistant_id": assistant.assistant_id or assistant.name},
        }
        for name, value in (("temperature", temperature), ("top_p", top_p)):
            if value is not None:
                body[name] = value
        if tools:
            body["tools"] = [{"type": "function", **tool.declaration()} for tool in tools]
        options = options or run_options.RunOptions()
        body.update(run_options.responses_fields(options, assistant.instructions, continuation=bool(items)))
        if file_search is not None:
            _add_file_search(body, file_search)
        return body

    def start_run(
        self,
        thread_id,
        assistant,
        temperature,
        top_p,
        *,
        timeout,
        follow=False,
        tools=(),
        options=None,
        file_search=None,
    ):
        body = self._create_body(
            thread_id, assistant, temperature, top_p, tools, options=options, file_search=file_search
        )
        return self._start(thread_id, body, timeout, follow)

    def submit_tool_outputs(
        self,
        thread_id,
        run,
        outputs,
        assistant,
        temperature,
        top_p,
        *,
        timeout,
        follow=False,
        tools=(),
        options=None,
        file_search=None,
    ):
        """A new background response on the conversation, its input the outputs of the run's calls."""
        items = [{"type": "function_call_output", "call_id": call_id, "output": output} for call_id, output in outputs]
        body = self._create_body(thread_id, assistant, temperature, top_p, tools, items, options, file_search)
        return self._start(thread_id, body, timeout, follow)

    def _start(self, thread_id, body, timeout, follow) -> StartedRun:
        """Create the response; with `follow`, on an upstream event stream kept open for the wait."""
        if follow:
            started = time.monotonic()
            try:
                return self._start_streamed(thread_id, {**body, "stream": True}, timeout)
            except UpstreamRejected as exc:
                if exc.param != "stream":
                    raise
                log.info("the upstream will not stream a new run (%s); polling instead", exc)
            timeout -= time.monotonic() - started
        response, _ = self.upstream.post("/responses", body, timeout=timeout, what="create run")
        return StartedRun(_run(response, thread_id))

    def _start_streamed(self, thread_id, body, timeout) -> StartedRun:
        """Create the response on a stream, and keep that stream open for the wait."""
        read_seconds = min(timeout, STREAM_READ_SECONDS)
        follower = _Follower(self, thread_id)
        try:
            opened = follower.stack.enter_context(
                self.upstream.stream(
                    "POST", "/responses", body, timeout=read_seconds, what="create run", skip=follower.unheard
                )
            )
            follower.events = iter(opened)
            for event in follower.events:
                follower.seen = event.get("sequence_number", follower.seen)
                if event.get("type") in NAMING_EVENTS:
                    follower.run_id = event["response"]["id"]
                    return StartedRun(_run(event["response"], thread_id), follower.follow, follower.close)
                if event.get("type") == "error":
                    break
            raise UpstreamTransient("create run: the stream ended before it named the run", maybe_sent=True)
        except BaseException:
            follower.close()
            raise

    @staticmethod
    def _checked(response: dict, thread_id: str) -> dict:
        """The run, if the response belongs to the thread of the URL."""
        if (response.get("conversation") or {}).get("id") != thread_id:
            raise UpstreamNotFound(f"No run found with id '{response['id']}'.")
        return _run(response, thread_id)

    def get_run(self, thread_id, run_id, timeout: float | None = None):
        response, headers = self.upstream.get(
            f"/responses/{run_id}", timeout=timeout or QUICK_CALL_SECONDS, what="retrieve run"
        )
        run = self._checked(response, thread_id)
        # Not sent by the Responses API today (only on Assistants runs); read in case it comes.
        hint = headers.get("openai-poll-after-ms")
        return self._poll(run, response, thread_id, int(hint) if hint and hint.isdigit() else None)

    @staticmethod
    def _poll(run, response, thread_id, hint=None) -> Poll:
        produced = ()
        output = response.get("output") or []
        if run["status"] in ("completed", "incomplete"):
            ended = run["completed_at"]
            produced = tuple(
                _message(
                    o, thread_id, ended, run_id=run["id"], assistant_id=run["assistant_id"], completed_at=ended, turn=i
                )
                for i, o in enumerate(output)
                if o["type"] == "message"
            )
        step_calls = ()
        if run["status"] in FINAL_STATUSES:
            step_calls = tuple(STEP_CALLS[o["type"]](o) for o in output if o["type"] in STEP_CALLS)
        return Poll(run, hint, produced, step_calls)

    def cancel_run(self, thread_id, run_id, timeout: float | None = None):
        """Cancel a queued or running response (one that has ended is a 400 upstream)."""
        self.get_run(thread_id, run_id, timeout)
        cancelled, _ = self.upstream.post(
            f"/responses/{run_id}/cancel", timeout=timeout or QUICK_CALL_SECONDS, what="cancel run"
        )
        return _run(cancelled, thread_id)

    def newest_run(self, thread_id, timeout):
        """The Responses and Conversations APIs list no responses of a conversation, and its items
        appear only once a response has completed: nothing can tell (UPSTREAM-FACTS.md)."""
        return False, None

    def close_open_calls(self, thread_id, run, timeout):
        """Answer every function call of the run with an output saying it was not carried out.

        Such a response is `completed` upstream (cancelling it is a 400), and its calls
        block the conversation until each has a `function_call_output`.
        """
        deadline = time.monotonic() + timeout
        calls = ((run.get("required_action") or {}).get("submit_tool_outputs") or {}).get("tool_calls") or []
        items = [{"type": "function_call_output", "call_id": c["id"], "output": NOT_CARRIED_OUT} for c in calls]
        for start in range(0, len(items), MAX_ITEMS_PER_POST):
            self.upstream.post(
                f"/conversations/{thread_id}/items",
                {"items": items[start : start + MAX_ITEMS_PER_POST]},
                timeout=max(0.05, min(QUICK_CALL_SECONDS, deadline - time.monotonic())),
                what="close function calls",
            )
        return True

    # changes to threads and single messages

    def update_thread(self, thread_id, metadata):
        with translated_errors("update thread"):
            return self._thread(self.conversations.update(thread_id, metadata=metadata))

    def get_message(self, thread_id, message_id):
        """The conversation item, if it is a message (tool calls and their outputs are not)."""
        with translated_errors("retrieve message"):
            item = _json(self.conversations.items.with_raw_response.retrieve(message_id, conversation_id=thread_id))
        if item.get("type") != "message":
            raise UpstreamNotFound(f"retrieve message: No message found with id '{message_id}'.")
        return _message(item, thread_id, None)

    def update_message(self, thread_id, message_id, metadata):
        """Conversations have no item update: the item is only checked, the caller keeps the metadata."""
        return dict(self.get_message(thread_id, message_id), metadata=dict(metadata))

    def delete_message(self, thread_id, message_id):
        """Delete the item (checked to be a message first); the upstream answers with the conversation."""
        self.get_message(thread_id, message_id)
        with translated_errors("delete message"):
            self.conversations.items.delete(message_id, conversation_id=thread_id)
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}


def _add_file_search(body: dict, file_search: FileSearch) -> None:
    """The file_search tool over the run's stores, and the results' text when the client asked for it."""
    tool = {"type": "file_search", "vector_store_ids": list(file_search.vector_store_ids)}
    if file_search.max_num_results is not None:
        tool["max_num_results"] = file_search.max_num_results
    body.setdefault("tools", []).append(tool)
    if file_search.include_results:
        body["include"] = [INCLUDE_FILE_SEARCH_RESULTS]


class _Follower:
    """Reads a response's upstream events from its creation stream until the response ends."""

    def __init__(self, engine: ResponsesEngine, thread_id: str):
        self.engine = engine
        self.thread_id = thread_id
        self.run_id = None
        self.events = None
        self.seen: int | None = None  # the last sequence_number read
        self.stack = contextlib.ExitStack()
        self.citations: dict[str, StreamedCitations] = {}  # message item ID -> its markers so far
        # Events passed over unread: a reply's text and citations when nobody hears them as they
        # come (the run's end brings them whole); hundreds of deltas in a long reply.
        self.unheard: set[str] = set()

    def close(self) -> None:
        self.stack.close()
        self.events = None

    def follow(self, timeout: float, listener: RunListener | None = None) -> Poll | None:
        """The run once it has ended, or None when the upstream events cannot tell in `timeout` seconds.

        After a drop or a silence the stream is resumed after the last event read; a
        stream that ends without a terminal event means one look with a GET. `listener`
        hears the run's start and its text as the events come (see `_tell`).
        """
        deadline = time.monotonic() + timeout
        self.unheard.clear()
        if listener is None or not getattr(listener, "hears_text", True):
            self.unheard.update(TEXT_EVENTS)
        for _ in range(STREAM_ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                if self.events is None:
                    self._resume(min(remaining, STREAM_READ_SECONDS))
                ended = self._read(deadline, listener)
                if ended is not None:
                    return ended
                if time.monotonic() >= deadline:
                    return None
                looked = self.engine.get_run(self.thread_id, self.run_id, min(QUICK_CALL_SECONDS, remaining))
                if looked.run["status"] in FINAL_STATUSES:
                    return looked
            except UpstreamTransient:
                pass  # dropped or silent: resume after the last event read
            except UpstreamError as exc:
                log.info("run %s: the stream cannot go on (%s); polling", self.run_id, exc)
                return None
            finally:
                self.close()
        return None

    def _resume(self, read_seconds: float) -> None:
        params = {"stream": "true"}
        if self.seen is not None:
            params["starting_after"] = self.seen
        opened = self.stack.enter_context(
            self.engine.upstream.stream(
                "GET",
                f"/responses/{self.run_id}",
                params=params,
                timeout=read_seconds,
                what="stream run",
                skip=self.unheard,
            )
        )
        self.events = iter(opened)

    def _read(self, deadline: float, listener: RunListener | None = None) -> Poll | None:
        """The ended run if the stream tells it before it closes or the deadline passes."""
        for event in self.events:
            self.seen = event.get("sequence_number", self.seen)
            kind = event.get("type")
            if listener is not None:
                self._tell(event, listener)
            if kind in TERMINAL_EVENTS:
                response = event["response"]
                return self.engine._poll(self.engine._checked(response, self.thread_id), response, self.thread_id)
            if kind == "error" or time.monotonic() >= deadline:
                return None  # unknown types (keepalive) are skipped
        return None

    def _tell(self, event: dict, listener: RunListener) -> None:
        """Tell the listener of the run's start, of its text as it comes, and of its citations
        (each a marker placed where the upstream cites, as `_message` places them)."""
        kind = event.get("type")
        if kind == "response.in_progress":
            listener.status_changed(_run(event["response"], self.thread_id))
        elif kind == "response.output_text.delta":
            # Content part 0: a message's text parts are joined into one part (see `_message`).
            self._citations(event).text(event["delta"])
            listener.text_appended(event["item_id"], 0, event["delta"])
        elif kind == "response.output_item.done" and _ran_upstream(event["item"]["type"]):
            # Told now, so that its step comes before the reply's, as the upstream made them.
            listener.tool_calls_made([STEP_CALLS[event["item"]["type"]](event["item"])])
        elif kind == "response.output_text.annotation.added":
            cited = self._citations(event).cite(event.get("annotation") or {})
            if cited is not None:
                listener.citation_added(event["item_id"], 0, *cited)

    def _citations(self, event: dict) -> StreamedCitations:
        item_id = event["item_id"]
        if item_id not in self.citations:
            self.citations[item_id] = StreamedCitations(event.get("output_index", 0))
        return self.citations[item_id]

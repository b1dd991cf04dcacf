"""The Responses + Conversations engine, the default since the Assistants API shut down.

A thread is a conversation, a message is a conversation message item, and a run
is a background response on that conversation. Everything is translated into
the Assistants v2 shapes here, once.
"""

from __future__ import annotations

import contextlib
import json
import time

import httpx2
import openai

from app.contract import MessagePage, Poll, UpstreamError, UpstreamNotFound, UpstreamTransient, list_page
from app.engines.client import quick_client, translated_errors

FINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "incomplete", "requires_action"})
TERMINAL_EVENTS = frozenset({"response.completed", "response.failed", "response.incomplete"})
# A silent stream is reopened after this long, so that a wait never outlives its deadline by more.
STREAM_READ_SECONDS = 5.0
STREAM_ATTEMPTS = 30


def _json(raw) -> dict:
    """The upstream's JSON as is: skipping the SDK's models makes a poll several times cheaper."""
    return raw.http_response.json()


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text") or "" for part in content or [])


def _message(item: dict, thread_id: str, created_at: int | None, run_id=None, assistant_id=None) -> dict:
    return {
        "id": item["id"],
        "object": "thread.message",
        "created_at": created_at,
        "thread_id": thread_id,
        "role": item["role"],
        "content": [{"type": "text", "text": {"value": _text_of(item.get("content")), "annotations": []}}],
        "assistant_id": assistant_id,
        "run_id": run_id,
        "attachments": [],
        "metadata": {},
        "status": "completed",
        "completed_at": None,
        "incomplete_at": None,
        "incomplete_details": None,
    }


def _usage(usage: dict | None) -> dict | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
    }


def _required_action(calls) -> dict:
    tool_calls = [
        {"id": c["call_id"], "type": "function", "function": {"name": c["name"], "arguments": c["arguments"]}}
        for c in calls
    ]
    return {"type": "submit_tool_outputs", "submit_tool_outputs": {"tool_calls": tool_calls}}


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
        "started_at": None if status == "queued" else created_at,
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


class ResponsesEngine:
    """Threads, messages and runs on the Responses and Conversations APIs."""

    name = "responses"
    # Conversation items carry no creation time or run, and can't be listed
    # `before` an item or by run: the backend's record fills those in.
    full_message_lists = False

    def __init__(self, client: openai.OpenAI):
        self.conversations = client.conversations
        self.responses = client.responses
        self.quick_responses = quick_client(client).responses

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
        with translated_errors("list messages"):
            while has_more and len(data) <= page.limit:
                listed = _json(
                    self.conversations.items.with_raw_response.list(
                        thread_id, limit=100, order=page.order, after=after or openai.omit
                    )
                )
                data += [_message(item, thread_id, None) for item in listed["data"] if item["type"] == "message"]
                has_more, after = bool(listed["has_more"]), listed["last_id"]
        more = len(data) > page.limit or has_more
        data = data[: page.limit]
        return list_page(data, more)

    def create_run(self, thread_id, assistant, temperature, top_p):
        with translated_errors("create run"):
            response = _json(
                self.responses.with_raw_response.create(
                    model=assistant.model,
                    instructions=assistant.instructions or openai.omit,
                    conversation=thread_id,
                    input=[],
                    background=True,
                    store=True,
                    temperature=temperature if temperature is not None else openai.omit,
                    top_p=top_p if top_p is not None else openai.omit,
                    metadata={"assistant_id": assistant.assistant_id or assistant.name},
                )
            )
        return _run(response, thread_id)

    @staticmethod
    def _checked(response: dict, thread_id: str) -> dict:
        """The run, if the response belongs to the thread of the URL."""
        if (response.get("conversation") or {}).get("id") != thread_id:
            raise UpstreamNotFound(f"No run found with id '{response['id']}'.")
        return _run(response, thread_id)

    def get_run(self, thread_id, run_id):
        with translated_errors("retrieve run"):
            raw = self.quick_responses.with_raw_response.retrieve(run_id)
            response = _json(raw)
        run = self._checked(response, thread_id)
        hint = raw.headers.get("openai-poll-after-ms")
        return self._poll(run, response, thread_id, int(hint) if hint and hint.isdigit() else None)

    @staticmethod
    def _poll(run, response, thread_id, hint=None) -> Poll:
        produced = ()
        if run["status"] in ("completed", "incomplete"):
            produced = tuple(
                _message(o, thread_id, run["completed_at"], run_id=run["id"], assistant_id=run["assistant_id"])
                for o in response.get("output") or []
                if o["type"] == "message"
            )
        return Poll(run, hint, produced)

    def watch_run(self, thread_id, run_id, timeout):
        """Block on the response's event stream until it ends, resuming after drops.

        None when the stream cannot tell (refused, closed without an end, or the
        time is up): the caller then looks with `get_run`.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        for _ in range(STREAM_ATTEMPTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            try:
                with translated_errors("stream run"):
                    ended, seen, closed = self._read_stream(run_id, seen, deadline, min(remaining, STREAM_READ_SECONDS))
            except UpstreamTransient:
                continue  # dropped or silent: resume after the last event seen
            except UpstreamError:
                return None
            if ended is not None:
                return self._poll(self._checked(ended, thread_id), ended, thread_id)
            if closed:
                return None
        return None

    def _read_stream(self, run_id, seen, deadline, read_seconds):
        """The final response if the stream tells it, the last sequence number, and whether it closed by itself."""
        try:
            with self.quick_responses.with_streaming_response.retrieve(
                run_id,
                stream=True,
                starting_after=seen or openai.omit,
                timeout=httpx2.Timeout(read_seconds, connect=5.0),
            ) as stream:
                for line in stream.iter_lines():
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        seen = event.get("sequence_number", seen)
                        if event.get("type") in TERMINAL_EVENTS:
                            return event["response"], seen, False
                    if time.monotonic() >= deadline:
                        return None, seen, False
        except httpx2.TransportError as exc:
            raise UpstreamTransient(f"stream run: {exc.__class__.__name__}") from None
        return None, seen, True

    def cancel_run(self, thread_id, run_id):
        with translated_errors("retrieve run"):
            self._checked(_json(self.quick_responses.with_raw_response.retrieve(run_id)), thread_id)
        with translated_errors("cancel run"):
            return _run(_json(self.quick_responses.with_raw_response.cancel(run_id)), thread_id)

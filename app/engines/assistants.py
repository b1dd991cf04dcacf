"""The Assistants v2 engine: for upstreams that still speak `/v1/threads`.

Its objects already have the contract's shapes, so translation is a dump of
the SDK model; an assistant type resolves to its configured `asst_...` ID.
"""

from __future__ import annotations

import warnings

import openai

from app import run_options
from app.contract import MessagePage, Poll, StartedRun, list_page
from app.engines.client import QUICK_CALL_SECONDS, quick_client, translated_errors


def _plain(model) -> dict:
    return model.model_dump(mode="json")


class AssistantsEngine:
    """Threads, messages and runs on an Assistants v2 upstream."""

    name = "assistants"
    additional_messages_in_run = True  # the run's creation adds them
    full_message_lists = True

    def __init__(self, client: openai.OpenAI):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.client = client
            self.threads = client.beta.threads
            self.quick_runs = quick_client(client).beta.threads.runs

    def _call(self, what, fn, *args, **kwargs):
        with translated_errors(what), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return fn(*args, **kwargs)

    def create_thread(self, messages, metadata):
        thread = self._call("create thread", self.threads.create, messages=messages, metadata=metadata or openai.omit)
        return _plain(thread), []

    def get_thread(self, thread_id):
        return _plain(self._call("retrieve thread", self.threads.retrieve, thread_id))

    def delete_thread(self, thread_id):
        self._call("delete thread", self.threads.delete, thread_id)
        return {"id": thread_id, "object": "thread.deleted", "deleted": True}

    def add_message(self, thread_id, role, text, metadata, attachments=None):
        message = self._call(
            "add message",
            self.threads.messages.create,
            thread_id,
            role=role,
            content=text,
            metadata=metadata or openai.omit,
            attachments=attachments or openai.omit,
        )
        return _plain(message)

    def list_messages(self, thread_id, page: MessagePage):
        params = {k: v for k, v in vars(page).items() if v is not None}
        raw = self._call("list messages", self.threads.messages.with_raw_response.list, thread_id, **params)
        listed = raw.http_response.json()
        return list_page(listed["data"], bool(listed["has_more"]))

    def _one_attempt(self, timeout: float | None):
        """The runs API; with `timeout`, one attempt so bounded: a call that may have been sent is never repeated."""
        client = self.client
        if timeout is not None:
            client = client.with_options(max_retries=0, timeout=max(0.001, timeout))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return client.beta.threads.runs

    def start_run(self, thread_id, assistant, temperature, top_p, *, timeout, follow=False, tools=(), options=None):
        """Polled: a run streams only to the client that created it, which the backend does not need.
        The run's settings (`options`) go as the Assistants API takes them."""
        run = self._call(
            "create run",
            self._one_attempt(timeout).create,
            thread_id,
            assistant_id=assistant.assistant_id,
            temperature=temperature if temperature is not None else openai.omit,
            top_p=top_p if top_p is not None else openai.omit,
            tools=[{"type": "function", "function": tool.declaration()} for tool in tools] or openai.omit,
            **run_options.assistants_fields(options or run_options.RunOptions()),
        )
        return StartedRun(_plain(run))

    def submit_tool_outputs(
        self, thread_id, run, outputs, assistant, temperature, top_p, *, timeout, follow=False, tools=(), options=None
    ):
        """The outputs of the run's calls; the same run goes on."""
        submitted = self._call(
            "submit tool outputs",
            self._one_attempt(timeout).submit_tool_outputs,
            run["id"],
            thread_id=thread_id,
            tool_outputs=[{"tool_call_id": call_id, "output": output} for call_id, output in outputs],
        )
        return StartedRun(_plain(submitted))

    def get_run(self, thread_id, run_id, timeout: float | None = None):
        raw = self._call(
            "retrieve run",
            self.quick_runs.with_raw_response.retrieve,
            run_id,
            thread_id=thread_id,
            timeout=_quick(timeout),
        )
        hint = raw.headers.get("openai-poll-after-ms")
        # The upstream's JSON already has the run's shape; the SDK's models would only cost time.
        return Poll(raw.http_response.json(), int(hint) if hint and hint.isdigit() else None)

    def cancel_run(self, thread_id, run_id, timeout: float | None = None):
        run = self._call("cancel run", self.quick_runs.cancel, run_id, thread_id=thread_id, timeout=_quick(timeout))
        return _plain(run)

    def newest_run(self, thread_id, timeout):
        """GET /threads/{id}/runs, newest first, one run."""
        raw = self._call(
            "list runs",
            self.quick_runs.with_raw_response.list,
            thread_id,
            limit=1,
            order="desc",
            timeout=_quick(timeout),
        )
        listed = raw.http_response.json()["data"]
        return True, (listed[0] if listed else None)

    def close_open_calls(self, thread_id, run, timeout):
        """False: a run in `requires_action` holds its thread until it is cancelled (or expires)."""
        return False

    # changes to threads and single messages

    def update_thread(self, thread_id, metadata):
        return _plain(self._call("update thread", self.threads.update, thread_id, metadata=metadata))

    def get_message(self, thread_id, message_id):
        return _plain(self._call("retrieve message", self.threads.messages.retrieve, message_id, thread_id=thread_id))

    def update_message(self, thread_id, message_id, metadata):
        message = self._call(
            "update message", self.threads.messages.update, message_id, thread_id=thread_id, metadata=metadata
        )
        return _plain(message)

    def delete_message(self, thread_id, message_id):
        self._call("delete message", self.threads.messages.delete, message_id, thread_id=thread_id)
        return {"id": message_id, "object": "thread.message.deleted", "deleted": True}


def _quick(timeout: float | None) -> float:
    return min(QUICK_CALL_SECONDS, max(0.001, timeout)) if timeout is not None else QUICK_CALL_SECONDS

"""The fake OpenAI upstream, exercised through the real openai SDK (in-process, over WSGI)."""

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2
import openai
import pytest
from openai.types.beta.thread import Thread
from openai.types.beta.threads.message import Message
from openai.types.beta.threads.run import Run
from openai.types.conversations.conversation import Conversation
from openai.types.conversations.conversation_item_list import ConversationItemList
from openai.types.responses.response import Response

from fake_openai import create_fake_app
from fake_openai import responses as fake_responses
from fake_openai import streaming as fake_streaming
from fake_openai.state import FakeState

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

ACTIVE = {"queued", "in_progress", "cancelling"}
BETA = {"OpenAI-Beta": "assistants=v2"}


@pytest.fixture
def app():
    return create_fake_app(default_duration=0.1)


@pytest.fixture
def fake(app):
    return app.fake


def make_client(app, api_key="sk-test"):
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app))
    return openai.OpenAI(api_key=api_key, base_url="http://fake/v1", http_client=http, max_retries=0)


@pytest.fixture
def client(app):
    with make_client(app) as sdk:
        yield sdk


@pytest.fixture
def raw(app):
    """A plain HTTP client for raw JSON, headers and the control API."""
    with httpx2.Client(
        transport=httpx2.WSGITransport(app=app),
        base_url="http://fake",
        headers={"Authorization": "Bearer sk-test", **BETA},
    ) as http:
        yield http


def start_run(client, text, **run_args):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": text}])
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_test", **run_args)
    return thread, run


def wait_run(client, thread_id, run_id, timeout=3.0):
    deadline = time.time() + timeout
    while True:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        if run.status not in ACTIVE or time.time() > deadline:
            return run
        time.sleep(0.01)


def start_response(client, text, **extra):
    conversation = client.conversations.create()
    response = client.responses.create(
        model="gpt-4o-mini", conversation=conversation.id, background=True, store=True, input=text, **extra
    )
    return conversation, response


def wait_response(client, response_id, timeout=3.0):
    deadline = time.time() + timeout
    while True:
        response = client.responses.retrieve(response_id)
        if response.status not in ("queued", "in_progress") or time.time() > deadline:
            return response
        time.sleep(0.01)


def reply_texts(client, thread_id):
    page = client.beta.threads.messages.list(thread_id, order="asc")
    return [(m.role, m.content[0].text.value) for m in page.data]


def item_texts(client, conversation_id):
    page = client.conversations.items.list(conversation_id, order="asc")
    return [(i.role, i.content[0].text) for i in page.data if i.type == "message"]


# --- Assistants: time and outcomes ---------------------------------------------------------


def test_completed_run_echoes_and_records_final_at(client, fake):
    thread, run = start_run(client, "hello there [fake duration=0.3]")
    assert run.status == "queued" and run.object == "thread.run" and run.model == "gpt-4o"
    assert run.expires_at == run.created_at + 600 and run.usage is None
    time.sleep(0.1)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"
    done = wait_run(client, thread.id, run.id)
    observed = time.time()
    assert done.status == "completed" and done.completed_at is not None and done.started_at is not None
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens
    info = fake.run_info(run.id)
    assert info["final_at"] == info["created_at"] + 0.3
    assert info["final_at"] <= observed and info["status"] == "completed" and info["polls"] >= 2
    assert reply_texts(client, thread.id) == [
        ("user", "hello there [fake duration=0.3]"),
        ("assistant", "Echo: hello there"),
    ]
    reply = client.beta.threads.messages.list(thread.id).data[0]
    assert reply.run_id == run.id and reply.assistant_id == "asst_test" and reply.created_at == int(info["final_at"])


def test_label_prefixes_the_reply():
    app = create_fake_app(default_duration=0.02, label="[offline upstream]")
    with make_client(app) as client:
        thread, run = start_run(client, "ping")
        wait_run(client, thread.id, run.id)
        assert reply_texts(client, thread.id)[-1] == ("assistant", "[offline upstream] Echo: ping")


def test_directive_is_stripped_from_the_middle_of_the_text(client):
    thread, run = start_run(client, "one [fake status=completed duration=0.02] two")
    wait_run(client, thread.id, run.id)
    assert reply_texts(client, thread.id)[-1] == ("assistant", "Echo: one two")


def test_failed_run(client):
    thread, run = start_run(client, "x [fake status=failed duration=0.05]")
    done = wait_run(client, thread.id, run.id)
    assert done.status == "failed" and done.failed_at is not None and done.completed_at is None
    assert done.last_error.code == "server_error"
    assert done.last_error.message == "The fake upstream failed this run on purpose."
    assert [role for role, _ in reply_texts(client, thread.id)] == ["user"]


def test_incomplete_run_adds_a_partial_reply(client):
    thread, run = start_run(client, "abcdefgh [fake status=incomplete duration=0.05]")
    done = wait_run(client, thread.id, run.id)
    assert done.status == "incomplete" and done.incomplete_details.reason == "max_completion_tokens"
    reply = client.beta.threads.messages.list(thread.id).data[0]
    assert reply.content[0].text.value == "Echo: abcd" and reply.status == "incomplete"


def test_self_cancelled_run(client):
    thread, run = start_run(client, "x [fake status=cancelled duration=0.05]")
    done = wait_run(client, thread.id, run.id)
    assert done.status == "cancelled" and done.cancelled_at is not None


def test_expired_run(client, fake):
    thread, run = start_run(client, "x [fake status=expired duration=0.05]")
    done = wait_run(client, thread.id, run.id)
    assert done.status == "expired"
    assert done.expires_at == int(fake.run_info(run.id)["final_at"])


def test_requires_action_run_stays_and_locks_until_cancelled(client):
    thread, run = start_run(client, "weather? [fake status=requires_action duration=0.05]")
    time.sleep(0.1)
    parked = wait_run(client, thread.id, run.id)
    assert parked.status == "requires_action"
    call = parked.required_action.submit_tool_outputs.tool_calls[0]
    assert parked.required_action.type == "submit_tool_outputs"
    assert call.id.startswith("call_") and call.function.name == "get_weather"
    assert call.function.arguments == '{"city": "Paris"}'
    with pytest.raises(openai.BadRequestError):
        client.beta.threads.messages.create(thread.id, role="user", content="more")
    assert client.beta.threads.runs.cancel(run.id, thread_id=thread.id).status == "cancelling"
    done = wait_run(client, thread.id, run.id)
    assert done.status == "cancelled" and done.required_action is None


def test_never_run_stays_in_progress(client):
    thread, run = start_run(client, "x [fake status=never duration=0.02]")
    time.sleep(0.1)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "in_progress"


def test_bad_directive_is_a_400(client):
    with pytest.raises(openai.BadRequestError, match="unknown status 'bogus'"):
        start_run(client, "x [fake status=bogus]")


# --- Assistants: rules and errors ----------------------------------------------------------


def test_active_run_blocks_messages_and_runs(client):
    thread, run = start_run(client, "x [fake duration=0.5]")
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.messages.create(thread.id, role="user", content="more")
    assert caught.value.body["message"] == f"Can't add messages to {thread.id} while a run {run.id} is active."
    assert caught.value.body["type"] == "invalid_request_error" and caught.value.code is None
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.create(thread.id, assistant_id="asst_test")
    assert caught.value.body["message"] == f"Thread {thread.id} already has an active run {run.id}."
    wait_run(client, thread.id, run.id)
    message = client.beta.threads.messages.create(thread.id, role="user", content=[{"type": "text", "text": "more"}])
    assert message.content[0].text.value == "more" and message.object == "thread.message"


def test_cancel_run(client, fake):
    fake.config.cancel_delay = 0.05
    thread, run = start_run(client, "x [fake duration=5]")
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    asked = time.time()
    assert cancelling.status == "cancelling"
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelling'."):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    done = wait_run(client, thread.id, run.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    assert fake.run_info(run.id)["final_at"] == pytest.approx(asked + 0.05, abs=0.02)
    with pytest.raises(openai.BadRequestError, match="Cannot cancel run with status 'cancelled'."):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)


def test_cancel_of_a_completed_run_is_a_400(client):
    thread, run = start_run(client, "x [fake duration=0.02]")
    wait_run(client, thread.id, run.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert caught.value.body["message"] == "Cannot cancel run with status 'completed'."


def test_not_found_errors(client, fake):
    with pytest.raises(openai.NotFoundError) as caught:
        client.beta.threads.retrieve("thread_nope")
    assert caught.value.body == {
        "message": "No thread found with id 'thread_nope'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }
    thread = client.beta.threads.create()
    fake.config.unknown_assistants.add("asst_gone")
    for assistant_id in ("asst_gone", "bogus"):
        with pytest.raises(openai.NotFoundError, match=f"No assistant found with id '{assistant_id}'."):
            client.beta.threads.runs.create(thread.id, assistant_id=assistant_id)
    other, run = start_run(client, "x")
    with pytest.raises(openai.NotFoundError, match=f"No run found with id '{run.id}'."):
        client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)


def test_thread_get_and_delete(client):
    thread = client.beta.threads.create(metadata={"k": "v"})
    assert client.beta.threads.retrieve(thread.id).metadata == {"k": "v"}
    deleted = client.beta.threads.delete(thread.id)
    assert deleted.deleted is True and deleted.object == "thread.deleted" and deleted.id == thread.id
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_beta_header_is_required(raw):
    answer = raw.post("/v1/threads", json={}, headers={"OpenAI-Beta": ""})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_beta"
    assert "'OpenAI-Beta: assistants=v2'" in answer.json()["error"]["message"]


def test_unknown_body_parameter_is_rejected(raw):
    answer = raw.post("/v1/threads", json={"mesages": []})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"] == "Unrecognized request argument supplied: mesages"


# --- Pagination -------------------------------------------------------------------------------


def test_message_pagination(client):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": f"m{i}"} for i in range(5)])
    ids = [m.id for m in client.beta.threads.messages.list(thread.id, order="asc").data]
    assert len(ids) == 5
    assert [m.content[0].text.value for m in client.beta.threads.messages.list(thread.id, order="asc").data] == [
        f"m{i}" for i in range(5)
    ]
    desc = client.beta.threads.messages.list(thread.id)
    assert [m.id for m in desc.data] == ids[::-1] and desc.has_more is False

    page = client.beta.threads.messages.list(thread.id, order="asc", limit=2)
    assert [m.id for m in page.data] == ids[:2] and page.has_more is True
    assert (page.first_id, page.last_id) == (ids[0], ids[1])
    page = client.beta.threads.messages.list(thread.id, order="asc", limit=2, after=ids[3])
    assert [m.id for m in page.data] == ids[4:] and page.has_more is False
    page = client.beta.threads.messages.list(thread.id, order="asc", limit=2, before=ids[3])
    assert [m.id for m in page.data] == ids[1:3] and page.has_more is True
    page = client.beta.threads.messages.list(thread.id, order="desc", limit=2, after=ids[3])
    assert [m.id for m in page.data] == [ids[2], ids[1]] and page.has_more is True
    page = client.beta.threads.messages.list(thread.id, order="desc", before=ids[1])
    assert [m.id for m in page.data] == ids[:1:-1] and page.has_more is False
    everything = list(client.beta.threads.messages.list(thread.id, order="asc", limit=2))
    assert [m.id for m in everything] == ids

    with pytest.raises(openai.BadRequestError) as caught:
        client.beta.threads.messages.list(thread.id, limit=101)
    assert caught.value.code == "integer_above_max_value" and caught.value.param == "limit"


def test_message_list_filters_by_run(client):
    thread, run = start_run(client, "hi [fake duration=0.02]")
    wait_run(client, thread.id, run.id)
    page = client.beta.threads.messages.list(thread.id, run_id=run.id)
    assert [m.role for m in page.data] == ["assistant"]


def test_conversation_item_pagination(client):
    conversation = client.conversations.create(
        items=[{"type": "message", "role": "user", "content": f"i{i}"} for i in range(5)]
    )
    ids = [i.id for i in client.conversations.items.list(conversation.id, order="asc").data]
    assert len(ids) == 5
    page = client.conversations.items.list(conversation.id, limit=2)
    assert [i.id for i in page.data] == [ids[4], ids[3]] and page.has_more is True
    page = client.conversations.items.list(conversation.id, limit=2, order="asc", after=ids[1])
    assert [i.id for i in page.data] == ids[2:4] and page.has_more is True
    assert [i.id for i in client.conversations.items.list(conversation.id, order="asc", limit=2)] == ids


# --- Responses + Conversations ----------------------------------------------------------------


def test_completed_response(client, fake):
    conversation, response = start_response(client, "hello [fake duration=0.3]", instructions="be brief")
    assert response.status == "queued" and response.background is True and response.output == []
    assert response.conversation.id == conversation.id and response.instructions == "be brief"
    listed = item_texts(client, conversation.id)
    if client.responses.retrieve(response.id).status in ("queued", "in_progress"):
        assert listed == []  # its input joins the conversation when it completes, not before
    done = wait_response(client, response.id)
    assert done.status == "completed" and done.completed_at is not None
    assert done.output_text == "Echo: hello"
    assert done.output[0].type == "message" and done.output[0].content[0].annotations == []
    assert done.usage.total_tokens == done.usage.input_tokens + done.usage.output_tokens
    assert done.usage.input_tokens_details.cached_tokens == done.usage.input_tokens // 2
    info = fake.run_info(response.id)
    assert info["final_at"] == info["created_at"] + 0.3
    assert item_texts(client, conversation.id) == [("user", "hello [fake duration=0.3]"), ("assistant", "Echo: hello")]
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert items[1].id == done.output[0].id and items[1].content[0].type == "output_text"


def test_response_with_empty_input_uses_the_conversation(client):
    conversation = client.conversations.create()
    client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "earlier"}]
    )
    response = client.responses.create(
        model="gpt-4o-mini", conversation={"id": conversation.id}, background=True, store=True, input=[]
    )
    assert wait_response(client, response.id).output_text == "Echo: earlier"


@pytest.mark.parametrize(
    "outcome, status",
    [("failed", "failed"), ("expired", "failed"), ("incomplete", "incomplete"), ("cancelled", "cancelled")],
)
def test_response_outcomes(client, outcome, status):
    conversation, response = start_response(client, f"abcdefgh [fake status={outcome} duration=0.05]")
    done = wait_response(client, response.id)
    assert done.status == status
    if outcome in ("failed", "expired"):
        assert done.error.code == ("server_error" if outcome == "failed" else "expired")
        assert done.error.message == "The fake upstream failed this run on purpose."
        assert done.output == []
    if outcome == "incomplete":
        assert done.incomplete_details.reason == "max_output_tokens"
        assert done.output_text == "Echo: abcd"
        assert item_texts(client, conversation.id)[-1] == ("assistant", "Echo: abcd")
    if outcome == "cancelled":
        assert done.output == [] and item_texts(client, conversation.id) == []


def test_requires_action_response_is_a_function_call(client):
    conversation, response = start_response(client, "weather? [fake status=requires_action duration=0.05]")
    done = wait_response(client, response.id)
    assert done.status == "completed" and len(done.output) == 1
    call = done.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    assert call.id.startswith("fc_") and call.call_id.startswith("call_") and call.status == "completed"
    assert done.output_text == ""
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.type for i in items] == ["message", "function_call"]


def test_never_response_and_cancel(client, fake):
    conversation, response = start_response(client, "x [fake status=never duration=0.02]")
    time.sleep(0.06)
    assert client.responses.retrieve(response.id).status == "in_progress"
    cancelled = client.responses.cancel(response.id)
    assert cancelled.status == "cancelled"
    assert fake.run_info(response.id)["final_at"] == pytest.approx(time.time(), abs=0.05)
    assert client.responses.cancel(response.id).status == "cancelled"
    client.conversations.items.create(conversation.id, items=[{"type": "message", "role": "user", "content": "next"}])


def test_cancel_of_a_completed_response_is_a_400(client):
    conversation, response = start_response(client, "x [fake duration=0.02]")
    wait_response(client, response.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.cancel(response.id)
    assert caught.value.body["message"] == "Cannot cancel a completed response."


def test_conversation_locked(client):
    conversation, response = start_response(client, "x [fake duration=0.5]")
    message = "Another process is currently operating on this conversation. Please retry in a few seconds."
    with pytest.raises(openai.BadRequestError) as caught:
        client.conversations.items.create(conversation.id, items=[{"type": "message", "role": "user", "content": "y"}])
    assert caught.value.code == "conversation_locked" and caught.value.body["message"] == message
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o", conversation=conversation.id, background=True, input="z")
    assert caught.value.code == "conversation_locked"
    wait_response(client, response.id)
    created = client.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "y"}]
    )
    assert created.object == "list" and created.has_more is False and created.first_id == created.last_id


def test_conversation_get_delete_and_404(client):
    conversation = client.conversations.create(metadata={"topic": "t"})
    assert client.conversations.retrieve(conversation.id).metadata == {"topic": "t"}
    deleted = client.conversations.delete(conversation.id)
    assert deleted.deleted is True and deleted.object == "conversation.deleted"
    with pytest.raises(openai.NotFoundError, match=f"Conversation with id '{conversation.id}' not found."):
        client.conversations.retrieve(conversation.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="gpt-4o", conversation=conversation.id, background=True, input="z")


def test_foreground_response_is_refused(client):
    with pytest.raises(openai.BadRequestError, match="the fake only supports background responses"):
        client.responses.create(model="gpt-4o", input="z")


def test_forget_makes_a_response_404(client, fake, raw):
    conversation, response = start_response(client, "x [fake duration=0.02]")
    wait_response(client, response.id)
    fake.forget(response.id)
    with pytest.raises(openai.NotFoundError, match=f"Response with id '{response.id}' not found."):
        client.responses.retrieve(response.id)
    assert fake.run_info(response.id)["status"] == "completed"
    _, other = start_response(client, "y")
    assert raw.post(f"/_fake/forget/{other.id}").json() == {"id": other.id, "forgotten": True}
    assert raw.get(f"/v1/responses/{other.id}").status_code == 404
    assert raw.post("/_fake/forget/resp_unknown").status_code == 404


# --- Knobs: poll_after_ms, fail_every_nth_poll, api_key ------------------------------------


def test_poll_after_ms_header(client, fake):
    thread, run = start_run(client, "x")
    conversation, response = start_response(client, "y")
    raw_run = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=thread.id)
    assert "openai-poll-after-ms" not in raw_run.headers
    fake.config.poll_after_ms = 250
    raw_run = client.beta.threads.runs.with_raw_response.retrieve(run.id, thread_id=thread.id)
    assert raw_run.headers["openai-poll-after-ms"] == "250" and raw_run.parse().id == run.id
    raw_response = client.responses.with_raw_response.retrieve(response.id)
    assert "openai-poll-after-ms" not in raw_response.headers  # the Responses spec declares none


@pytest.mark.parametrize(
    "kind, error, status",
    [
        ("500", openai.InternalServerError, 500),
        ("503", openai.InternalServerError, 503),
        ("429", openai.RateLimitError, 429),
    ],
)
def test_fail_every_nth_poll(client, fake, kind, error, status):
    fake.config.fail_every_nth_poll = 3
    fake.config.fail_kind = kind
    thread, run = start_run(client, "x")
    conversation, response = start_response(client, "y")
    client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    client.responses.retrieve(response.id)
    with pytest.raises(error) as caught:
        client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert caught.value.status_code == status
    if kind == "429":
        assert caught.value.response.headers["retry-after"] == "0"
        assert caught.value.code == "rate_limit_exceeded"
    client.responses.retrieve(response.id)
    client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    with pytest.raises(error):
        client.responses.retrieve(response.id)
    assert fake.stats()["polls"] == 6
    assert fake.run_info(run.id)["polls"] == 3 and fake.run_info(response.id)["polls"] == 3


@pytest.mark.parametrize("kind", ["response", "run"])
def test_a_plain_look_is_answered_without_flask_as_flask_would(client, fake, raw, app, monkeypatch, kind):
    if kind == "response":
        _, job = start_response(client, "y [fake duration=60]")
        path, view, route = f"/v1/responses/{job.id}", "get_response", "GET /v1/responses/{response_id}"
    else:
        thread, job = start_run(client, "y [fake duration=60]")
        path, view, route = (
            f"/v1/threads/{thread.id}/runs/{job.id}",
            "get_run",
            "GET /v1/threads/{thread_id}/runs/{run_id}",
        )
    direct = raw.get(path)
    fake.config.fail_every_nth_poll = 10**9  # a knob on polls: Flask's route answers, and never fails
    through_flask = raw.get(path)
    assert direct.status_code == through_flask.status_code == 200
    assert direct.content == through_flask.content
    drop = {"x-request-id"}
    assert {k: v for k, v in direct.headers.items() if k not in drop} == {
        k: v for k, v in through_flask.headers.items() if k not in drop
    }
    assert direct.headers["x-request-id"].startswith("req_") and len(direct.headers["x-request-id"]) == 36
    assert fake.stats()["requests"][route] == 2
    assert fake.stats()["polls"] == 2 and fake.run_info(job.id)["polls"] == 2
    # The direct path is really taken: with Flask's view broken, a plain look still answers.
    fake.config.fail_every_nth_poll = 0
    monkeypatch.setitem(app.view_functions, view, lambda **ids: 1 / 0)
    assert raw.get(path).json()["id"] == job.id
    # A wrong key, a missing beta header, an unknown object, a poll hint: Flask's answers.
    assert raw.get(path, headers={"Authorization": "Bearer "}).status_code == 401
    monkeypatch.undo()
    assert raw.get(path.replace(job.id, job.id[:-2] + "zz")).status_code == 404
    if kind == "run":
        assert raw.get(path, headers={"OpenAI-Beta": ""}).status_code == 400
        fake.config.poll_after_ms = 250
        assert raw.get(path).headers["openai-poll-after-ms"] == "250"


def test_wrong_api_key_is_401_with_a_masked_key():
    app = create_fake_app(api_key="sk-right-key-0000", default_duration=0.02)
    with make_client(app, api_key="sk-wrong-key-987654") as client:
        with pytest.raises(openai.AuthenticationError) as caught:
            client.conversations.create()
    message = caught.value.body["message"]
    assert message == (
        "Incorrect API key provided: sk-wr**********7654. "
        "You can find your API key at https://platform.openai.com/account/api-keys."
    )
    assert caught.value.code == "invalid_api_key" and caught.value.type == "invalid_request_error"
    with make_client(app, api_key="sk-right-key-0000") as client:
        assert client.conversations.create().object == "conversation"


def test_missing_authorization_is_401(app):
    with httpx2.Client(transport=httpx2.WSGITransport(app=app), base_url="http://fake") as http:
        answer = http.post("/v1/conversations", json={})
    assert answer.status_code == 401
    assert answer.json()["error"]["message"].startswith("You didn't provide an API key.")


# --- Shapes, control API, runner ---------------------------------------------------------------


def test_answers_validate_against_the_sdk_types(client, raw):
    thread = raw.post("/v1/threads", json={"messages": [{"role": "user", "content": "hi [fake duration=0.02]"}]}).json()
    Thread.model_validate(thread)
    run = raw.post(f"/v1/threads/{thread['id']}/runs", json={"assistant_id": "asst_x"}).json()
    Run.model_validate(run)
    wait_run(client, thread["id"], run["id"])
    Run.model_validate(raw.get(f"/v1/threads/{thread['id']}/runs/{run['id']}").json())
    for message in raw.get(f"/v1/threads/{thread['id']}/messages").json()["data"]:
        Message.model_validate(message)
    conversation = raw.post("/v1/conversations", json={}).json()
    Conversation.model_validate(conversation)
    body = {
        "model": "gpt-4o",
        "conversation": conversation["id"],
        "background": True,
        "input": "hi [fake duration=0.02]",
    }
    response = raw.post("/v1/responses", json=body).json()
    Response.model_validate(response)
    wait_response(client, response["id"])
    Response.model_validate(raw.get(f"/v1/responses/{response['id']}").json())
    ConversationItemList.model_validate(raw.get(f"/v1/conversations/{conversation['id']}/items").json())


def test_control_api(app, client, raw):
    thread, run = start_run(client, "x [fake duration=0.02]")
    wait_run(client, thread.id, run.id)
    stats = raw.get("/_fake/stats").json()
    assert stats["requests"]["POST /v1/threads/{thread_id}/runs"] == 1
    assert stats["requests"]["GET /v1/threads/{thread_id}/runs/{run_id}"] == stats["polls"] >= 1
    assert stats["runs_created"] == 1 and stats == app.fake.stats()
    info = raw.get(f"/_fake/runs/{run.id}").json()
    assert info["id"] == run.id and info["status"] == "completed" and info["polls"] == stats["polls"]
    assert info["final_at"] == info["created_at"] + 0.02
    assert raw.get("/_fake/runs/run_unknown").status_code == 404

    config = raw.post(
        "/_fake/config", json={"poll_after_ms": 100, "unknown_assistants": ["asst_a"], "default_duration": 0.05}
    ).json()
    assert config["poll_after_ms"] == 100 and app.fake.config.unknown_assistants == {"asst_a"}
    assert raw.post("/_fake/config", json={"nope": 1}).status_code == 400
    assert raw.post("/_fake/config", json={"fail_kind": "418"}).status_code == 400

    assert raw.post("/_fake/reset").status_code == 200
    assert app.fake.stats() == {"requests": {}, "polls": 0, "runs_created": 0}
    assert app.fake.config.poll_after_ms is None and app.fake.config.default_duration == 0.1
    with pytest.raises(openai.NotFoundError):
        client.beta.threads.retrieve(thread.id)


def test_runner_serves_over_http():
    root = Path(__file__).resolve().parent.parent
    server = subprocess.Popen(
        [sys.executable, "-m", "fake_openai", "--host", "127.0.0.1", "--port", "0", "--default-duration", "0.02"],
        cwd=root,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = server.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        base = line.strip().split()[-1]
        with openai.OpenAI(api_key="sk-test", base_url=base, max_retries=0) as client:
            conversation, response = start_response(client, "over http")
            assert wait_response(client, response.id).output_text == "Echo: over http"
    finally:
        server.terminate()
        server.wait(timeout=5)
        server.stdout.close()


# --- Streamed background responses -------------------------------------------------------------


def sse_events(answer):
    """The JSON events of an SSE answer, in order."""
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    return [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]


def streamed(raw, text, conversation=None, **extra):
    body = {"model": "gpt-4o", "background": True, "stream": True, "input": text, **extra}
    if conversation:
        body["conversation"] = conversation
    return raw.post("/v1/responses", json=body)


def test_a_background_stream_sends_every_event_from_creation(raw):
    events = sse_events(streamed(raw, "hello big world [fake duration=0.1]"))
    kinds = [e["type"] for e in events]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds[3:5] == ["response.output_item.added", "response.content_part.added"]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert kinds[-1] == "response.completed" and kinds.count("response.output_text.delta") == 4
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert "".join(e["delta"] for e in deltas) == "Echo: hello big world"
    assert all(e["output_index"] == 0 and e["content_index"] == 0 for e in deltas)
    assert deltas[0]["item_id"] == events[-1]["response"]["output"][0]["id"]
    assert events[0]["response"]["status"] == "queued" and events[-1]["response"]["status"] == "completed"
    Response.model_validate(events[-1]["response"])


def test_a_reply_is_written_word_by_word_while_the_response_is_in_progress():
    now = [1000.0]
    fake = FakeState(default_duration=1.0, clock=lambda: now[0])
    body = {"model": "gpt-4o", "background": True, "stream": True, "input": "one two three"}
    with fake.lock:
        response = fake_responses.create_response(fake, body)

    def at(instant):
        now[0] = instant
        with fake.lock:
            response.advance(fake.now())
            return [e["delta"] for e in response.events if e["type"] == "response.output_text.delta"]

    # in progress from 1000.1 to 1001.0; word i of 4 at 1000.1 + 0.9 * i / 5
    assert at(1000.05) == [] and response.status == "queued"
    assert at(1000.3) == ["Echo: "] and response.status == "in_progress"
    assert at(1000.7) == ["Echo: ", "one ", "two "]
    assert response.next_change_at() == pytest.approx(1000.82)
    assert at(1001.0) == ["Echo: ", "one ", "two ", "three"] and response.status == "completed"
    items = {e["item_id"] for e in response.events if e["type"] == "response.output_text.delta"}
    assert items == {response.output[0]["id"]}
    kinds = [e["type"] for e in response.events]
    assert kinds.count("response.output_item.added") == 1 and kinds[-1] == "response.completed"


def test_a_cancel_mid_reply_keeps_the_words_sent_and_sends_no_more():
    now = [1000.0]
    fake = FakeState(default_duration=1.0, clock=lambda: now[0])
    body = {"model": "gpt-4o", "background": True, "stream": True, "input": "one two three"}
    with fake.lock:
        response = fake_responses.create_response(fake, body)
        now[0] = 1000.5
        response.advance(fake.now())
        fake_responses.cancel_response(fake, response.id)
        now[0] = 1002.0
        response.advance(fake.now())
    deltas = [e["delta"] for e in response.events if e["type"] == "response.output_text.delta"]
    assert deltas == ["Echo: ", "one "] and response.status == "cancelled"
    assert response.output == [] and response.events[-1]["type"] == "response.output_text.delta"


def test_the_sdk_reads_a_background_stream(client):
    stream = client.responses.create(model="gpt-4o", input="hi [fake duration=0.05]", background=True, stream=True)
    events = list(stream)
    assert events[0].type == "response.created" and events[0].sequence_number == 0
    assert events[-1].type == "response.completed" and events[-1].response.output_text == "Echo: hi"


def test_get_stream_is_refused_unless_created_with_background_and_stream(client, raw):
    conversation, response = start_response(client, "x [fake duration=0.05]")
    answer = raw.get(f"/v1/responses/{response.id}?stream=true")
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "stream" and "stream" in error["message"]
    with pytest.raises(openai.BadRequestError):
        client.responses.retrieve(response.id, stream=True)


def test_resume_replays_only_the_events_after_the_cursor(raw):
    first = sse_events(streamed(raw, "one two [fake duration=0.05]"))
    response_id = first[0]["response"]["id"]
    again = sse_events(raw.get(f"/v1/responses/{response_id}?stream=true&starting_after=2"))
    assert again == first[3:]
    assert sse_events(raw.get(f"/v1/responses/{response_id}?stream=true")) == first


def test_resume_stops_working_after_the_window(raw, fake):
    fake.config.stream_resume_seconds = 0.1
    response_id = sse_events(streamed(raw, "x [fake duration=0.02]"))[0]["response"]["id"]
    assert raw.get(f"/v1/responses/{response_id}?stream=true&starting_after=1").status_code == 200
    time.sleep(0.15)
    answer = raw.get(f"/v1/responses/{response_id}?stream=true&starting_after=1")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "starting_after"
    assert raw.get(f"/v1/responses/{response_id}").json()["status"] == "completed"


@pytest.mark.parametrize(
    "outcome, last",
    [("failed", "response.failed"), ("incomplete", "response.incomplete"), ("expired", "response.failed")],
)
def test_terminal_stream_events(raw, outcome, last):
    events = sse_events(streamed(raw, f"abcd [fake status={outcome} duration=0.05]"))
    assert events[-1]["type"] == last and events[-1]["response"]["status"] == last.split(".")[1]


def test_a_cancelled_stream_ends_without_a_terminal_event(raw):
    events = sse_events(streamed(raw, "x [fake status=cancelled duration=0.05]"))
    assert [e["type"] for e in events] == ["response.created", "response.queued", "response.in_progress"]


def test_cancel_ends_an_open_stream_at_once(fake, raw):
    def cancel_soon():
        deadline = time.time() + 2
        while not fake.responses and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(0.1)
        with fake.lock:
            fake_responses.cancel_response(fake, next(iter(fake.responses)))

    canceller = threading.Thread(target=cancel_soon)
    canceller.start()
    started = time.monotonic()
    events = sse_events(streamed(raw, "x [fake status=never]"))
    canceller.join()
    assert time.monotonic() - started < 0.6
    assert [e["type"] for e in events] == ["response.created", "response.queued", "response.in_progress"]


@pytest.mark.parametrize("stuck", [False, True])
def test_a_creation_stream_aborted_before_the_start_may_leave_the_response_queued(fake, stuck):
    fake.config.stuck_if_aborted = stuck
    with fake.lock:
        body = {"model": "gpt-4o", "background": True, "stream": True, "input": "x [fake duration=0.05]"}
        response = fake_responses.create_response(fake, body)
    stream = fake_streaming.events(fake, response, at_creation=True)
    assert '"response.created"' in next(stream)
    stream.close()
    time.sleep(0.1)
    assert fake.run_info(response.id)["status"] == ("queued" if stuck else "completed")


def test_keepalive_frames_carry_a_sequence_number(raw, fake):
    fake.config.keepalive_seconds = 0.05
    events = sse_events(streamed(raw, "x [fake duration=0.4]"))
    keepalives = [e for e in events if e["type"] == "keepalive"]
    assert len(keepalives) >= 3 and all(isinstance(e["sequence_number"], int) for e in keepalives)
    assert events[-1]["type"] == "response.completed"


def test_stream_mode_refuse_refuses_streams_at_creation(raw, fake):
    fake.config.stream_mode = "refuse"
    answer = streamed(raw, "x")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == "stream"


def test_retry_after_knob(client, fake):
    fake.config.update({"fail_every_nth_poll": 1, "fail_kind": "429", "retry_after": 7})
    conversation, response = start_response(client, "x")
    with pytest.raises(openai.RateLimitError) as caught:
        client.responses.retrieve(response.id)
    assert caught.value.response.headers["retry-after"] == "7"


# --- Conversations: limits and rules --------------------------------------------------------------


def user_items(count):
    return [{"type": "message", "role": "user", "content": f"i{i}"} for i in range(count)]


def test_input_items_join_the_conversation_only_when_the_response_completes(client, fake):
    conversation, response = start_response(client, "x [fake status=never]")
    assert item_texts(client, conversation.id) == []
    with fake.lock:
        fake.responses[response.id].outcome = "completed"  # let it end now
        fake.responses[response.id].end_at = fake.now()
    done = wait_response(client, response.id)
    assert done.status == "completed"
    assert item_texts(client, conversation.id) == [("user", "x [fake status=never]"), ("assistant", "Echo: x")]


def test_at_most_20_items_per_add_and_per_new_conversation(client, raw):
    conversation = client.conversations.create(items=user_items(20))
    assert len(client.conversations.items.list(conversation.id, limit=100).data) == 20
    for answer in (
        raw.post("/v1/conversations", json={"items": user_items(21)}),
        raw.post(f"/v1/conversations/{conversation.id}/items", json={"items": user_items(21)}),
    ):
        assert answer.status_code == 400
        assert answer.json()["error"]["code"] == "array_above_max_length"
        assert answer.json()["error"]["param"] == "items"
    assert client.conversations.items.create(conversation.id, items=user_items(20)).object == "list"


def test_item_list_parameters(client, raw):
    conversation = client.conversations.create(items=user_items(3))
    url = f"/v1/conversations/{conversation.id}/items"
    page = raw.get(url).json()
    assert [i["content"][0]["text"] for i in page["data"]] == ["i2", "i1", "i0"]
    assert set(page) >= {"data", "has_more", "first_id", "last_id"}
    assert raw.get(url, params={"include": "message.output_text.logprobs"}).status_code == 200
    listed = client.conversations.items.list(conversation.id, include=["message.output_text.logprobs"])
    assert len(listed.data) == 3
    for bad in ({"limit": 0}, {"limit": 101}, {"order": "up"}):
        assert raw.get(url, params=bad).status_code == 400
    answer = raw.get(url, params={"before": page["last_id"]})
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unknown_parameter" and answer.json()["error"]["param"] == "before"


def test_conversation_locked_names_the_conversation_param(client):
    conversation, response = start_response(client, "x [fake duration=0.5]")
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-4o", conversation=conversation.id, background=True, input="z")
    assert caught.value.status_code == 400 and caught.value.param == "conversation"
    assert caught.value.code == "conversation_locked"


def test_previous_response_id_with_conversation_is_a_400(client):
    conversation, response = start_response(client, "x [fake duration=0.02]")
    wait_response(client, response.id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(
            model="gpt-4o", conversation=conversation.id, previous_response_id=response.id, background=True, input="y"
        )
    assert caught.value.code == "mutually_exclusive_parameters"


# --- Function calling: Responses ---------------------------------------------------------------------


def weather_tool(name="get_weather"):
    return {
        "type": "function",
        "name": name,
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }


TOOLS = [weather_tool(), weather_tool("get_time")]
TWO_CALLS = '[fake call=get_weather args={"city": "Paris"} call=get_time args={"city": "Oslo"} duration=0.02]'


def respond(client, conversation_id, input_items, **extra):
    response = client.responses.create(
        model="gpt-4o", conversation=conversation_id, background=True, input=input_items, tools=TOOLS, **extra
    )
    return wait_response(client, response.id)


def output(call, text):
    return {"type": "function_call_output", "call_id": call.call_id, "output": text}


def test_a_scripted_call_ends_completed_with_a_function_call_item(client):
    conversation = client.conversations.create()
    done = respond(client, conversation.id, 'weather? [fake call=get_weather args={"city": "Paris"} duration=0.02]')
    assert done.status == "completed" and done.output_text == "" and len(done.output) == 1
    call = done.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert json.loads(call.arguments) == {"city": "Paris"}
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.type for i in items] == ["message", "function_call"]


def test_parallel_calls_then_outputs_reach_the_answer(client):
    conversation = client.conversations.create()
    done = respond(client, conversation.id, "plan " + TWO_CALLS)
    first, second = done.output
    assert (first.name, second.name) == ("get_weather", "get_time") and first.call_id != second.call_id
    with pytest.raises(openai.BadRequestError) as caught:
        respond(client, conversation.id, [output(first, "sunny")])
    assert caught.value.body["message"] == f"No tool output found for function call {second.call_id}."
    answer = respond(client, conversation.id, [output(first, "sunny"), output(second, "noon")])
    assert answer.output_text == "Echo: plan | get_weather -> sunny | get_time -> noon"
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [i.type for i in items] == [
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
        "message",
    ]


def test_parallel_tool_calls_false_calls_one_tool_per_turn(client):
    conversation = client.conversations.create()
    first = respond(client, conversation.id, "plan " + TWO_CALLS, parallel_tool_calls=False)
    assert [c.name for c in first.output] == ["get_weather"] and first.parallel_tool_calls is False
    second = respond(client, conversation.id, [output(first.output[0], "sunny")], parallel_tool_calls=False)
    assert [c.name for c in second.output] == ["get_time"]
    answer = respond(client, conversation.id, [output(second.output[0], "noon")], parallel_tool_calls=False)
    assert answer.output_text == "Echo: plan | get_weather -> sunny | get_time -> noon"


def test_an_open_call_blocks_the_conversation_until_its_output_is_added_as_an_item(client):
    conversation = client.conversations.create()
    call = respond(client, conversation.id, "w? [fake call=get_weather duration=0.02]").output[0]
    assert call.arguments == "{}"
    client.conversations.items.create(conversation.id, items=[{"type": "message", "role": "user", "content": "hm"}])
    with pytest.raises(openai.BadRequestError, match=f"No tool output found for function call {call.call_id}."):
        respond(client, conversation.id, [])
    client.conversations.items.create(conversation.id, items=[output(call, "rainy")])
    assert respond(client, conversation.id, []).output_text == "Echo: hm | get_weather -> rainy"


def test_rounds_repeat_the_calls(client):
    conversation = client.conversations.create()
    first = respond(client, conversation.id, "w [fake call=get_weather rounds=2 duration=0.02]")
    second = respond(client, conversation.id, [output(first.output[0], "a")])
    assert second.output[0].type == "function_call"
    third = respond(client, conversation.id, [output(second.output[0], "b")])
    assert third.output_text == "Echo: w | get_weather -> a | get_weather -> b"


def test_a_call_of_an_undeclared_tool_is_a_directive_error(client):
    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError, match="declares no function tool named 'get_stock'"):
        respond(client, conversation.id, "x [fake call=get_stock]")
    with pytest.raises(openai.BadRequestError, match="declares no function tool"):
        client.responses.create(
            model="gpt-4o", conversation=conversation.id, background=True, input="x [fake call=get_weather]"
        )


def test_an_output_for_an_unknown_call_is_a_400(client):
    conversation = client.conversations.create()
    with pytest.raises(openai.BadRequestError, match="No tool call found for function call output with call_id"):
        respond(client, conversation.id, [{"type": "function_call_output", "call_id": "call_nope", "output": "x"}])


def test_a_streamed_call_sends_argument_events(raw):
    events = sse_events(
        streamed(raw, 'x [fake call=get_weather args={"city": "Rome"} duration=0.02]', tools=[weather_tool()])
    )
    kinds = [e["type"] for e in events]
    assert kinds[3:] == [
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[5]["arguments"] == '{"city": "Rome"}' and events[5]["name"] == "get_weather"


# --- Function calling: Assistants ------------------------------------------------------------------


ASSISTANT_TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def test_a_run_requires_action_and_continues_with_submitted_outputs(client):
    text = (
        'weather? [fake call=get_weather args={"city": "Paris"} call=get_weather args={"city": "Oslo"} duration=0.02]'
    )
    thread, run = start_run(client, text, tools=ASSISTANT_TOOLS)
    parked = wait_run(client, thread.id, run.id)
    assert parked.status == "requires_action" and parked.required_action.type == "submit_tool_outputs"
    calls = parked.required_action.submit_tool_outputs.tool_calls
    assert [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Oslo"]
    assert all(c.type == "function" and c.function.name == "get_weather" for c in calls)
    for wrong in (
        [{"tool_call_id": calls[0].id, "output": "a"}],
        [{"tool_call_id": calls[0].id, "output": "a"}, {"tool_call_id": "call_nope", "output": "b"}],
        [{"tool_call_id": calls[0].id, "output": "a"}] * 2,
    ):
        with pytest.raises(openai.BadRequestError, match="Expected tool outputs for call_ids"):
            client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id, tool_outputs=wrong)
    assert client.beta.threads.runs.retrieve(run.id, thread_id=thread.id).status == "requires_action"
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": calls[1].id, "output": "cold"}, {"tool_call_id": calls[0].id, "output": "warm"}],
        poll_interval_ms=10,
    )
    assert done.status == "completed" and done.required_action is None
    assert reply_texts(client, thread.id)[-1] == (
        "assistant",
        "Echo: weather? | get_weather -> cold | get_weather -> warm",
    )
    with pytest.raises(openai.BadRequestError, match='Runs in status "completed" do not accept tool outputs.'):
        client.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id, tool_outputs=[])


def test_a_run_without_tools_may_call_the_assistants_own_tools(client):
    thread, run = start_run(client, "x [fake call=lookup duration=0.02]")
    parked = wait_run(client, thread.id, run.id)
    assert parked.required_action.submit_tool_outputs.tool_calls[0].function.name == "lookup"
    with pytest.raises(openai.BadRequestError, match="declares no function tool named 'lookup'"):
        start_run(client, "x [fake call=lookup]", tools=ASSISTANT_TOOLS)


def test_a_run_waiting_for_outputs_expires(client, fake):
    fake.config.run_expiry_seconds = 0.2
    thread, run = start_run(client, "x [fake call=get_weather duration=0.02]")
    assert wait_run(client, thread.id, run.id).status == "requires_action"
    time.sleep(0.25)
    expired = client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert expired.status == "expired" and expired.required_action is None
    client.beta.threads.messages.create(thread.id, role="user", content="next")


def test_the_legacy_requires_action_run_takes_outputs_too(client):
    thread, run = start_run(client, "w [fake status=requires_action duration=0.02]")
    call = wait_run(client, thread.id, run.id).required_action.submit_tool_outputs.tool_calls[0]
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": call.id, "output": "ok"}],
        poll_interval_ms=10,
    )
    assert done.status == "completed"
    assert reply_texts(client, thread.id)[-1] == ("assistant", "Echo: w | get_weather -> ok")

"""Threads, messages and list pagination, under both prefixes, on both engines."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import started_run_id

DIRECTIVE = re.compile(r"\s*\[fake [^\]]*\]")


def _texts(listing):
    """The message texts, without the fake upstream's script directives."""
    return [DIRECTIVE.sub("", m["content"][0]["text"]["value"]) for m in listing["data"]]


def test_thread_lifecycle(api):
    created = api.post("/threads", json={"metadata": {"topic": "art"}})
    assert created.status_code == 200
    thread = created.json
    assert thread["object"] == "thread" and thread["metadata"] == {"topic": "art"}
    assert isinstance(thread["created_at"], int)
    assert api.get(f"/threads/{thread['id']}").json["id"] == thread["id"]
    deleted = api.delete(f"/threads/{thread['id']}")
    assert deleted.json == {"id": thread["id"], "object": "thread.deleted", "deleted": True}
    assert api.get(f"/threads/{thread['id']}").status_code == 404


def test_thread_with_initial_messages(api):
    body = {"messages": [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]}
    thread = api.post("/threads", json=body).json
    listing = api.get(f"/threads/{thread['id']}/messages?order=asc").json
    assert _texts(listing) == ["first", "second"]


def test_message_shape_and_text_parts(api):
    thread = api.new_thread()
    added = api.post(
        f"/threads/{thread}/messages",
        json={
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
            "metadata": {"k": "v"},
        },
    )
    assert added.status_code == 200
    message = added.json
    assert message["object"] == "thread.message" and message["thread_id"] == thread and message["role"] == "user"
    assert message["content"] == [{"type": "text", "text": {"value": "one\ntwo", "annotations": []}}]
    assert message["metadata"] == {"k": "v"} and isinstance(message["created_at"], int)


@pytest.fixture
def conversation(api):
    """A thread with two runs: u0, a0 (run 1), u1, a1 (run 2), u2."""
    thread = api.new_thread()
    run_ids = []
    for index in range(2):
        api.say(thread, f"u{index} [fake duration=0.05]")
        run_ids.append(api.run(thread).json["id"])
    api.say(thread, "u2")
    return thread, run_ids


def test_list_defaults_newest_first_with_cursors(api, conversation):
    thread, _ = conversation
    listing = api.get(f"/threads/{thread}/messages").json
    assert listing["object"] == "list"
    assert _texts(listing) == ["u2", "Echo: u1", "u1", "Echo: u0", "u0"]
    assert listing["first_id"] == listing["data"][0]["id"] and listing["last_id"] == listing["data"][-1]["id"]
    assert listing["has_more"] is False


def test_list_pages_forward_with_after(api, conversation):
    thread, _ = conversation
    first = api.get(f"/threads/{thread}/messages?limit=2&order=asc").json
    assert _texts(first) == ["u0", "Echo: u0"] and first["has_more"] is True
    second = api.get(f"/threads/{thread}/messages?limit=2&order=asc&after={first['last_id']}").json
    assert _texts(second) == ["u1", "Echo: u1"] and second["has_more"] is True
    third = api.get(f"/threads/{thread}/messages?limit=2&order=asc&after={second['last_id']}").json
    assert _texts(third) == ["u2"] and third["has_more"] is False


@pytest.mark.parametrize("order,expected", [("desc", ["u2", "Echo: u1"]), ("asc", ["u0", "Echo: u0"])])
def test_list_pages_backward_with_before(api, conversation, order, expected):
    thread, _ = conversation
    everything = api.get(f"/threads/{thread}/messages?order={order}").json["data"]
    pivot = everything[2]["id"]
    page = api.get(f"/threads/{thread}/messages?order={order}&before={pivot}&limit=2").json
    assert _texts(page) == expected


def test_list_by_run(api, conversation):
    thread, run_ids = conversation
    listing = api.get(f"/threads/{thread}/messages?run_id={run_ids[1]}").json
    assert _texts(listing) == ["Echo: u1"]
    assert listing["data"][0]["run_id"] == run_ids[1]


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=101", "limit=x", "order=up", "after=bad%20id", "before=a/b", "run_id=..", "page=2"]
)
def test_list_arguments_are_checked(api, query):
    thread = api.new_thread()
    answer = api.get(f"/threads/{thread}/messages?{query}")
    assert answer.status_code == 400 and answer.json["error"]


def test_typed_prefix_pins_the_assistant_type(api):
    typed = api.under("/api/assistants/tutor")
    thread = typed.new_thread()
    typed.say(thread, "hello [fake duration=0.05]")
    run = typed.post(f"/threads/{thread}/runs", json={})
    assert run.status_code == 200 and run.json["assistant_id"] == "asst_tutor"
    typed.say(thread, "again [fake duration=0.05]")
    clash = typed.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"})
    assert clash.status_code == 400 and "tutor" in clash.json["error"]
    # The same thread is reachable under the legacy prefix too.
    assert api.get(f"/threads/{thread}/messages").status_code == 200


def test_unknown_prefix_type_is_a_json_404(api):
    answer = api.under("/api/assistants/nobody").post("/threads", json={})
    assert answer.status_code == 404 and answer.is_json


@pytest.mark.parametrize(
    "body,fragment",
    [
        ({"assistant_type": "painter"}, "Configured types: curator, tutor"),
        ({"assistant_id": "asst_other"}, "Configured types: curator, tutor"),
        ({}, "'assistant_type' is required"),
        ({"assistant_type": "curator", "assistant_id": "asst_tutor"}, "names type 'tutor'"),
    ],
)
def test_assistant_choice_errors(api, body, fragment):
    thread = api.new_thread()
    answer = api.post(f"/threads/{thread}/runs", json=body)
    assert answer.status_code == 400 and fragment in answer.json["error"]


@pytest.mark.parametrize(
    "choice", [{"assistant_id": "tutor"}, {"assistant_id": "asst_tutor"}, {"assistant_type": "TUTOR"}]
)
def test_assistant_id_may_name_the_type_or_its_id(api, choice):
    thread = api.new_thread()
    api.say(thread, "hi [fake duration=0.05]")
    answer = api.post(f"/threads/{thread}/runs", json=choice)
    assert answer.status_code == 200 and answer.json["assistant_id"] == "asst_tutor"


def test_with_one_type_it_is_the_default(make_app, base_env):
    from tests.helpers import TOKENS, Api

    app = make_app(ASSISTANT_TUTOR_ID=None, ASSISTANT_TUTOR_MODEL=None, ASSISTANT_TUTOR_TEMPERATURE=None)
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, "hi [fake duration=0.05]")
    answer = api.post(f"/threads/{thread}/runs", json={})
    assert answer.status_code == 200 and answer.json["assistant_id"] == "asst_curator"


def test_first_messages_keep_their_metadata(api):
    body = {"messages": [{"role": "user", "content": "tagged", "metadata": {"source": "import"}}]}
    thread = api.post("/threads", json=body).json
    listed = api.get(f"/threads/{thread['id']}/messages").json["data"]
    assert listed[0]["metadata"] == {"source": "import"}
    too_long = {"messages": [{"role": "user", "content": "x", "metadata": {"k": "v" * 600}}]}
    assert api.post("/threads", json=too_long).status_code == 400


ITEM_CREATE = {
    "assistants": "POST /v1/threads/{thread_id}/messages",
    "responses": "POST /v1/conversations/{conversation_id}/items",
}


def test_a_message_on_a_thread_with_an_active_run_is_409_and_never_sent_upstream(app, api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.6]")
    assert fake.stats()["requests"][ITEM_CREATE[engine_name]] == 1
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(api.run, thread)
        started_run_id(app, thread)
        busy = api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "hurry"})
        assert busy.status_code == 409
        assert fake.stats()["requests"][ITEM_CREATE[engine_name]] == 1
        assert pending.result().status_code == 200

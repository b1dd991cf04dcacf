"""Single messages (retrieve, modify, delete), thread modify and the thread list, on both engines:
through the official SDK under /v1, and as raw HTTP under the legacy prefixes."""

from __future__ import annotations

import openai
import pytest

from tests.helpers import TOKENS, background_run, call, upstream_calls

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

# The upstream routes these features use, as the fake counts them.
ITEM_GET = "GET /v1/conversations/{conversation_id}/items/{item_id}"
ITEM_DELETE = "DELETE /v1/conversations/{conversation_id}/items/{item_id}"
MESSAGE_UPDATE = "POST /v1/threads/{thread_id}/messages/{message_id}"
# The upstream writes of the `answered` fixture on the responses engine: nothing else writes there.
WRITES_BEFORE_UPDATE = (
    "POST /v1/conversations",
    "POST /v1/conversations/{conversation_id}/items",
    "POST /v1/responses",
)


@pytest.fixture
def sdk(live_server):
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1")
    yield client
    client.close()


def upstream_messages(fake, engine_name, thread_id) -> dict:
    """The thread's messages as the upstream holds them: id -> its metadata (None: the upstream keeps none)."""
    with fake.lock:
        if engine_name == "assistants":
            return {m["id"]: m["metadata"] for m in fake.threads[thread_id].messages}
        items = fake.conversations[thread_id].items
        return {i["id"]: i.get("metadata") for i in items if i["type"] == "message"}


def upstream_thread_metadata(fake, engine_name, thread_id) -> dict:
    with fake.lock:
        holders = fake.threads if engine_name == "assistants" else fake.conversations
        return dict(holders[thread_id].metadata)


@pytest.fixture
def answered(sdk):
    """A thread with a user message (metadata {"k": "v"}) and the reply of a completed run."""
    thread = sdk.beta.threads.create()
    asked = sdk.beta.threads.messages.create(
        thread.id, role="user", content="Hi [fake duration=0.05]", metadata={"k": "v"}
    )
    run = sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id="curator", poll_interval_ms=20)
    assert run.status == "completed"
    reply = sdk.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert reply.role == "assistant"
    return thread.id, asked, reply, run


def test_the_sdk_retrieves_a_message_with_what_was_set(sdk, answered):
    thread_id, asked, reply, run = answered
    got = sdk.beta.threads.messages.retrieve(asked.id, thread_id=thread_id)
    assert (got.id, got.role, got.thread_id, got.metadata) == (asked.id, "user", thread_id, {"k": "v"})
    assert got.content[0].text.value == "Hi [fake duration=0.05]"
    got_reply = sdk.beta.threads.messages.retrieve(reply.id, thread_id=thread_id)
    assert got_reply.run_id == run.id and got_reply.content[0].text.value == reply.content[0].text.value


def test_the_sdk_updates_a_message_and_every_read_shows_it(sdk, fake, engine_name, answered):
    thread_id, asked, _, _ = answered
    updated = sdk.beta.threads.messages.update(asked.id, thread_id=thread_id, metadata={"starred": "yes"})
    assert updated.id == asked.id and updated.metadata == {"starred": "yes"}
    held = upstream_messages(fake, engine_name, thread_id)
    if engine_name == "assistants":
        assert held[asked.id] == {"starred": "yes"} and upstream_calls(fake, MESSAGE_UPDATE) == 1
    else:  # Conversations items have no metadata and no update: the item is read, the backend keeps it
        assert held[asked.id] is None and upstream_calls(fake, ITEM_GET) == 1
        assert upstream_calls(fake, writes_only=True) == upstream_calls(fake, *WRITES_BEFORE_UPDATE)
    assert sdk.beta.threads.messages.retrieve(asked.id, thread_id=thread_id).metadata == {"starred": "yes"}
    listed = {m.id: m.metadata for m in sdk.beta.threads.messages.list(thread_id).data}
    assert listed[asked.id] == {"starred": "yes"}


def test_the_sdk_deletes_a_message_and_no_list_shows_it_again(sdk, fake, engine_name, answered):
    thread_id, asked, reply, run = answered
    deleted = sdk.beta.threads.messages.delete(reply.id, thread_id=thread_id)
    assert (deleted.id, deleted.object, deleted.deleted) == (reply.id, "thread.message.deleted", True)
    assert reply.id not in upstream_messages(fake, engine_name, thread_id)
    assert asked.id in upstream_messages(fake, engine_name, thread_id)
    if engine_name == "responses":
        assert upstream_calls(fake, ITEM_DELETE) == 1
    assert [m.id for m in sdk.beta.threads.messages.list(thread_id).data] == [asked.id]
    # Lists the backend answers from its record: by run, and before a cursor.
    assert sdk.beta.threads.messages.list(thread_id, run_id=run.id).data == []
    assert [m.id for m in sdk.beta.threads.messages.list(thread_id, order="desc", before=asked.id).data] == []
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.messages.retrieve(reply.id, thread_id=thread_id)
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.messages.delete(reply.id, thread_id=thread_id)


def test_the_sdk_updates_a_thread(sdk, fake, engine_name):
    thread = sdk.beta.threads.create(metadata={"title": "Old"})
    updated = sdk.beta.threads.update(thread.id, metadata={"title": "New", "color": "blue"})
    assert updated.id == thread.id and updated.metadata == {"title": "New", "color": "blue"}
    assert upstream_thread_metadata(fake, engine_name, thread.id) == {"title": "New", "color": "blue"}
    assert sdk.beta.threads.retrieve(thread.id).metadata == {"title": "New", "color": "blue"}


def test_another_users_thread_or_message_is_a_404_that_never_reaches_the_upstream(api, fake):
    bob = api.as_user("bob")
    bobs_thread = bob.new_thread()
    bobs_message = bob.say(bobs_thread, "mine")["id"]
    alices_thread = api.new_thread()
    before = upstream_calls(fake)
    answers = []
    for prefix in ("/api/openai", "/v1", "/api/assistants/curator"):
        alice = api.under(prefix)
        for thread in (bobs_thread, alices_thread):
            path = f"/threads/{thread}/messages/{bobs_message}"
            answers += [alice.get(path), alice.post(path, json={"metadata": {"x": "y"}}), alice.delete(path)]
        answers.append(alice.post(f"/threads/{bobs_thread}", json={"metadata": {"x": "y"}}))
    assert [a.status_code for a in answers] == [404] * len(answers)
    assert upstream_calls(fake) == before
    assert bob.get(f"/threads/{bobs_thread}/messages/{bobs_message}").json["metadata"] == {}


@pytest.mark.parametrize("prefix", ["/api/openai", "/api/assistants/curator"])
def test_the_legacy_prefixes_serve_the_same_routes(api, fake, engine_name, prefix):
    alice = api.under(prefix)
    thread = alice.post("/threads", json={"metadata": {"title": "Hello"}}).json["id"]
    message = alice.say(thread, "first")["id"]
    path = f"/threads/{thread}/messages/{message}"
    assert alice.get(path).json["content"][0]["text"]["value"] == "first"
    updated = alice.post(path, json={"metadata": {"note": "kept"}})
    assert updated.status_code == 200 and updated.json["metadata"] == {"note": "kept"}
    assert alice.get(f"/threads/{thread}/messages").json["data"][0]["metadata"] == {"note": "kept"}
    assert alice.post(path, json={}).json["metadata"] == {"note": "kept"}  # no metadata: unchanged
    renamed = alice.post(f"/threads/{thread}", json={"metadata": {"title": "Renamed"}})
    assert renamed.status_code == 200 and renamed.json["metadata"] == {"title": "Renamed"}
    assert upstream_thread_metadata(fake, engine_name, thread) == {"title": "Renamed"}
    assert alice.delete(path).json == {"id": message, "object": "thread.message.deleted", "deleted": True}
    assert upstream_messages(fake, engine_name, thread) == {}
    assert alice.get(path).status_code == 404
    assert alice.get(f"/threads/{thread}/messages").json["data"] == []


def test_bad_changes_are_400s_that_never_reach_the_upstream(api, fake):
    thread = api.new_thread()
    message = api.say(thread, "hi")["id"]
    before = upstream_calls(fake)
    for path in (f"/threads/{thread}", f"/threads/{thread}/messages/{message}"):
        for body in ({"metadata": {"k": 1}}, {"metadata": "x"}, {"content": "new"}, {"tool_resources": {}}):
            answer = api.post(path, json=body)
            assert answer.status_code == 400, (path, body, answer.json)
    assert api.get(f"/threads/{thread}/messages/bad%20id").status_code == 400
    assert upstream_calls(fake) == before


def test_a_message_is_not_deleted_while_a_run_holds_its_thread(api, fake):
    thread = api.new_thread()
    message = api.say(thread, "slow [fake duration=1]")["id"]
    with background_run(api, thread) as (pending, _):
        refused = api.delete(f"/threads/{thread}/messages/{message}")
        assert refused.status_code == 409
        assert upstream_calls(fake, ITEM_DELETE, "DELETE /v1/threads/{thread_id}/messages/{message_id}") == 0
    assert pending.result().status_code == 200
    assert api.delete(f"/threads/{thread}/messages/{message}").status_code == 200


# --- the thread list ---------------------------------------------------------------------------


def _ids(answer) -> list[str]:
    assert answer.status_code == 200, answer.json
    return [t["id"] for t in answer.json["data"]]


def test_the_thread_list_is_the_callers_newest_first(api, fake):
    bob = api.as_user("bob")
    bobs = [bob.new_thread() for _ in range(2)]
    alices = [api.post("/threads", json={"metadata": {"title": f"t{i}"}}).json["id"] for i in range(3)]
    before = upstream_calls(fake)
    listed = api.get("/threads")
    assert _ids(listed) == alices[::-1]
    body = listed.json
    assert body["object"] == "list" and body["has_more"] is False
    assert (body["first_id"], body["last_id"]) == (alices[2], alices[0])
    assert body["data"][0] == {
        "id": alices[2],
        "object": "thread",
        "created_at": body["data"][0]["created_at"],
        "metadata": {"title": "t2"},
        "tool_resources": {},
    }
    assert _ids(bob.get("/threads")) == bobs[::-1]
    assert _ids(api.get(f"/threads?after={bobs[0]}")) == []  # another's cursor finds nothing
    assert upstream_calls(fake) == before  # served from the record
    api.post(f"/threads/{alices[0]}", json={"metadata": {"title": "renamed"}})
    api.delete(f"/threads/{alices[1]}")
    shown = {t["id"]: t["metadata"] for t in api.get("/threads").json["data"]}
    assert shown == {alices[2]: {"title": "t2"}, alices[0]: {"title": "renamed"}}


@pytest.mark.parametrize("prefix", ["/api/openai", "/v1", "/api/assistants/tutor"])
def test_the_thread_list_pages_both_ways(api, prefix):
    alice = api.under(prefix)
    created = [alice.new_thread() for _ in range(5)]
    newest_first = created[::-1]
    first = alice.get("/threads?limit=2")
    assert _ids(first) == newest_first[:2] and first.json["has_more"] is True
    second = alice.get(f"/threads?limit=2&after={first.json['last_id']}")
    assert _ids(second) == newest_first[2:4] and second.json["has_more"] is True
    third = alice.get(f"/threads?limit=2&after={second.json['last_id']}")
    assert _ids(third) == newest_first[4:] and third.json["has_more"] is False
    back = alice.get(f"/threads?limit=2&before={third.json['first_id']}")
    assert _ids(back) == newest_first[2:4] and back.json["has_more"] is True
    back_again = alice.get(f"/threads?limit=3&before={back.json['first_id']}")
    assert _ids(back_again) == newest_first[:2] and back_again.json["has_more"] is False
    assert _ids(alice.get("/threads?order=asc&limit=3")) == created[:3]
    assert _ids(alice.get(f"/threads?order=asc&after={created[2]}")) == created[3:]
    assert _ids(alice.get(f"/threads?order=asc&before={created[2]}")) == created[:2]


@pytest.mark.parametrize("query", ["limit=0", "limit=101", "limit=x", "order=up", "after=a%20b", "page=2"])
def test_bad_thread_list_arguments_are_400s(api, query):
    assert api.get(f"/threads?{query}").status_code == 400


def test_the_thread_list_through_raw_http_on_v1(live_server):
    headers = {"Authorization": f"Bearer {TOKENS['alice']}"}
    created = [call("POST", f"{live_server.url}/v1/threads", {}, headers)[2]["id"] for _ in range(2)]
    status, _, listed = call("GET", f"{live_server.url}/v1/threads?limit=1", None, headers)
    assert status == 200 and [t["id"] for t in listed["data"]] == [created[1]] and listed["has_more"] is True
    status, _, anonymous = call("GET", f"{live_server.url}/v1/threads")
    assert status == 401 and set(anonymous["error"]) == {"message", "type", "param", "code"}


def test_the_sdk_reaches_the_thread_list_as_documented(sdk):
    created = sdk.beta.threads.create(metadata={"title": "Listed"})
    listed = sdk.get("/threads", cast_to=object)
    assert listed["data"][0]["id"] == created.id and listed["data"][0]["metadata"] == {"title": "Listed"}


def test_a_message_already_gone_upstream_leaves_the_record_when_deleted(api, fake, engine_name):
    thread = api.new_thread()
    message = api.say(thread, "soon gone upstream")["id"]
    with fake.lock:  # deleted behind the backend's back
        if engine_name == "assistants":
            fake.threads[thread].messages.clear()
        else:
            fake.conversations[thread].items.clear()
    assert api.delete(f"/threads/{thread}/messages/{message}").status_code == 404
    records = api.client.application.extensions["services"].records
    assert records.message_thread(message) is None

"""The runs of a thread listed, and a thread created and run in one request (`POST .../threads/runs`),
blocking, polled and streamed, through `/v1` with the official SDK and raw on the legacy prefixes."""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers import RUN_CREATE, TOKENS, Api, upstream_calls

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

THREAD_CREATE = {"responses": "POST /v1/conversations", "assistants": "POST /v1/threads"}


@pytest.fixture
def sdk(live_server):
    """Alice's SDK client of this backend's `/v1`."""
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1")
    yield client
    client.close()


def upstream_thread_texts(fake, engine_name, thread_id) -> list[str]:
    """The texts of the messages the upstream holds in a thread, oldest first."""
    with fake.lock:
        if engine_name == "responses":
            items = fake.conversations[thread_id].items
            return [i["content"][0]["text"] for i in items if i["type"] == "message"]
        messages = fake.threads[thread_id].messages
        return [m["content"][0]["text"]["value"] for m in messages]


def test_runs_list_newest_first_with_cursors(sdk, fake):
    thread = sdk.beta.threads.create()
    run_ids = []
    for n in range(3):
        sdk.beta.threads.messages.create(thread.id, role="user", content=f"turn {n} [fake duration=0.05]")
        run_ids.append(sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator").id)
    before = upstream_calls(fake)

    page = sdk.beta.threads.runs.list(thread.id)
    assert [r.id for r in page.data] == run_ids[::-1]
    assert all(r.status == "completed" and r.thread_id == thread.id for r in page.data)
    first = sdk.beta.threads.runs.list(thread.id, order="asc", limit=2)
    assert [r.id for r in first.data] == run_ids[:2] and first.has_more
    assert [r.id for r in list(first)] == run_ids  # the SDK follows `after`
    earlier = sdk.beta.threads.runs.list(thread.id, order="asc", before=run_ids[2])
    assert [r.id for r in earlier.data] == run_ids[:2]
    assert upstream_calls(fake) == before  # served from the backend's record

    with pytest.raises(openai.BadRequestError):
        sdk.beta.threads.runs.list(thread.id, limit=101)


def test_create_and_run_creates_the_thread_and_waits_for_the_run(sdk, fake, engine_name):
    run = sdk.beta.threads.create_and_run(
        assistant_id="curator",
        thread={"messages": [{"role": "user", "content": "Hello there [fake duration=0.1]"}], "metadata": {"k": "v"}},
        temperature=0.5,
    )
    assert run.status == "completed"  # answered once the run ended
    assert run.temperature == 0.5
    assert sdk.beta.threads.retrieve(run.thread_id).metadata == {"k": "v"}
    assert upstream_thread_texts(fake, engine_name, run.thread_id)[0] == "Hello there [fake duration=0.1]"
    assert upstream_calls(fake, THREAD_CREATE[engine_name]) == 1
    assert upstream_calls(fake, RUN_CREATE[engine_name]) == 1
    reply = sdk.beta.threads.messages.list(run.thread_id, limit=1).data[0]
    assert reply.role == "assistant" and reply.run_id == run.id
    assert reply.content[0].text.value == "Echo: Hello there"
    assert [r.id for r in sdk.beta.threads.runs.list(run.thread_id).data] == [run.id]


def test_create_and_run_poll(sdk, fake, engine_name):
    run = sdk.beta.threads.create_and_run_poll(
        assistant_id="curator", thread={"messages": [{"role": "user", "content": "poll me [fake duration=0.1]"}]}
    )
    assert run.status == "completed"
    assert upstream_calls(fake, RUN_CREATE[engine_name]) == 1
    assert sdk.beta.threads.messages.list(run.thread_id, limit=1).data[0].content[0].text.value == "Echo: poll me"


def test_create_and_run_stream_starts_with_the_new_thread(sdk, fake, engine_name):
    seen = []

    class Handler(openai.AssistantEventHandler):
        def on_event(self, event):
            seen.append(event.event)

    with sdk.beta.threads.create_and_run_stream(
        assistant_id="curator",
        thread={"messages": [{"role": "user", "content": "stream me [fake duration=0.2]"}]},
        event_handler=Handler(),
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()
        text = stream.get_final_messages()[-1].content[0].text.value
    assert seen[:2] == ["thread.created", "thread.run.created"]
    assert seen[-1] == "thread.run.completed"
    assert "thread.run.step.created" in seen and "thread.message.completed" in seen
    assert run.status == "completed" and text == "Echo: stream me"
    assert upstream_thread_texts(fake, engine_name, run.thread_id)[0] == "stream me [fake duration=0.2]"
    assert sdk.beta.threads.runs.retrieve(run.id, thread_id=run.thread_id).status == "completed"


@pytest.mark.parametrize(
    "body,reason",
    [
        ({"assistant_type": "nobody", "thread": {"messages": [{"role": "user", "content": "x"}]}}, "nobody"),
        ({"assistant_type": "curator", "thread": {"messages": [{"role": "robot", "content": "x"}]}}, "role"),
        ({"assistant_type": "curator", "thread": {"messages": [], "tool_resources": {}}}, "thread"),
        ({"assistant_type": "curator", "thread": [], "stream": True}, "thread"),
        ({"assistant_type": "curator", "additional_instructions": "be short"}, "additional_instructions"),
        ({"assistant_type": "curator", "temperature": 3}, "temperature"),
    ],
)
def test_create_and_run_checks_everything_before_creating_anything(api, fake, body, reason):
    answer = api.post("/threads/runs", json=body)
    assert answer.status_code == 400
    assert reason in answer.json["error"]
    assert upstream_calls(fake, writes_only=True) == 0


def test_create_and_run_on_the_legacy_prefixes(app, fake, engine_name):
    typed = Api(app.test_client(), TOKENS["alice"], "/api/assistants/curator")
    answer = typed.post("/threads/runs", json={"thread": {"messages": [{"role": "user", "content": "hi"}]}})
    assert answer.status_code == 200 and answer.json["status"] == "completed"
    thread_id = answer.json["thread_id"]
    listed = typed.get(f"/threads/{thread_id}/runs").json
    assert listed["object"] == "list" and [r["id"] for r in listed["data"]] == [answer.json["id"]]
    assert listed["first_id"] == listed["last_id"] == answer.json["id"] and listed["has_more"] is False

    streamed = typed.post("/threads/runs", json={"stream": True, "thread": {"messages": []}})
    assert streamed.mimetype == "text/event-stream"
    frames = [f for f in streamed.get_data(as_text=True).split("\n\n") if f]
    first_id, first_name, first_data = (line.split(": ", 1)[1] for line in frames[0].splitlines())
    assert first_name == "thread.created" and json.loads(first_data)["object"] == "thread"
    assert first_id == "1" and frames[1].startswith("id: 2\nevent: thread.run.created")  # numbered with its run
    assert upstream_calls(fake, THREAD_CREATE[engine_name]) == 2


def test_a_run_that_fails_after_create_and_run_leaves_its_thread(api, fake, engine_name):
    answer = api.post(
        "/threads/runs",
        json={
            "assistant_type": "curator",
            "thread": {"messages": [{"role": "user", "content": "x [fake status=failed]"}]},
        },
    )
    assert answer.status_code == 500 and answer.json["runStatus"] == "failed"
    thread_id = answer.json["run"]["thread_id"]
    assert api.get(f"/threads/{thread_id}").status_code == 200  # the thread stays, the caller's
    assert [r["status"] for r in api.get(f"/threads/{thread_id}/runs").json["data"]] == ["failed"]


@pytest.mark.parametrize("engine_name", ["assistants"])  # an upstream assistant that refuses the run
def test_a_run_that_cannot_start_names_the_thread_it_created(api, fake, engine_name):
    fake.config.unknown_assistants.add("asst_curator")
    answer = api.post("/threads/runs", json={"assistant_type": "curator", "thread": {}})
    assert answer.status_code == 502
    thread_id = answer.headers["x-thread-id"]
    assert answer.json["thread_id"] == thread_id
    assert api.get(f"/threads/{thread_id}").status_code == 200


def test_another_users_thread_has_no_runs_to_list(app, api):
    thread = api.new_thread()
    api.say(thread, "hi [fake duration=0.05]")
    run_id = api.run(thread).json["id"]
    bob = api.as_user("bob")
    for path in (f"/threads/{thread}/runs", f"/threads/{thread}/runs/{run_id}/steps"):
        assert bob.get(path).status_code == 404
        assert bob.under("/v1").get(path).json["error"]["type"] == "invalid_request_error"

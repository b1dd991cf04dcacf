"""Run steps: one `tool_calls` step per round of calls and one `message_creation` step per reply,
kept by the backend, listed and retrieved through `/v1` with the official SDK, and streamed in
their place so that the SDK's event handlers fire; and runs and messages that tell their times."""

from __future__ import annotations

import json
import time

import openai
import pytest
import sqlalchemy as sa

from app.api.sse import RunEvents
from app.assistant_types import AssistantType
from app.contract import MessagePage
from app.engines import responses
from app.runs.plan import RunPlan, started_at
from app.runs.steps import FILE_SEARCH_CONTENT, StepBook, new_step, with_content
from app.store.db import metadata
from app.store.records import Records
from tests import tool_handlers
from tests.helpers import TOKENS, Api, ServerThread

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

SERVER_TOOLS = "tests.tool_handlers:add"
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
ADD = 'sum [fake call=add args={"a": 2, "b": 40}]'


@pytest.fixture
def wait_strategy():
    """How the backend waits; a test may parametrize it."""
    return "poll"


@pytest.fixture
def tools_app(make_app, wait_strategy):
    tool_handlers.reset()
    return make_app(ASSISTANT_CURATOR_TOOLS=SERVER_TOOLS, WAIT_STRATEGY=wait_strategy)


@pytest.fixture
def sdk(tools_app):
    """Alice's SDK client of this backend's `/v1`, with the server tool `add`."""
    server = ServerThread(tools_app)
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{server.url}/v1")
    yield client
    client.close()
    server.stop()


def upstream_outputs(fake, engine_name) -> list[str]:
    """The tool outputs the upstream received, oldest first."""
    with fake.lock:
        if engine_name == "responses":
            items = [i for r in fake.responses.values() for i in r.input_items]
            return [i["output"] for i in items if i["type"] == "function_call_output"]
        return [output for r in fake.runs.values() for _, output in r.results]


def test_a_server_tool_round_and_the_reply_are_two_steps(sdk, fake, engine_name):
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": ADD}])
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator")
    assert run.status == "completed"
    steps = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert [s.type for s in steps.data] == ["message_creation", "tool_calls"]  # newest first
    reply, calls = steps.data
    for step in steps.data:
        assert (step.run_id, step.thread_id, step.status, step.object) == (
            run.id,
            thread.id,
            "completed",
            "thread.run.step",
        )
        assert step.completed_at is not None and step.assistant_id == run.assistant_id
    assert reply.usage.total_tokens > 0
    if engine_name == "responses":  # each round is a response with its own usage
        assert calls.usage.total_tokens > 0
        assert calls.usage.total_tokens + reply.usage.total_tokens == run.usage.total_tokens
    else:  # an Assistants run tells its usage once, at its end
        assert calls.usage is None and reply.usage.total_tokens == run.usage.total_tokens
    call = calls.step_details.tool_calls[0]
    assert call.type == "function" and call.function.name == "add"
    assert json.loads(call.function.arguments) == {"a": 2, "b": 40} and call.function.output == "42"
    assert tool_handlers.calls == [("add", {"a": 2, "b": 40})]
    assert upstream_outputs(fake, engine_name) == ["42"]
    message = sdk.beta.threads.messages.list(thread.id, limit=1).data[0]
    assert reply.step_details.message_creation.message_id == message.id
    assert "add -> 42" in message.content[0].text.value

    again = sdk.beta.threads.runs.steps.retrieve(calls.id, thread_id=thread.id, run_id=run.id)
    assert again.model_dump() == calls.model_dump()
    oldest = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc", limit=1)
    assert [s.id for s in oldest.data] == [calls.id] and oldest.has_more
    assert [s.id for s in list(oldest)] == [calls.id, reply.id]
    with pytest.raises(openai.NotFoundError):
        sdk.beta.threads.runs.steps.retrieve("step_nothing", thread_id=thread.id, run_id=run.id)


@pytest.mark.parametrize("wait_strategy", ["poll", "stream"])
def test_a_client_tool_step_waits_for_its_outputs(sdk, engine_name):
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": 'w [fake call=get_weather args={"city": "Rome"}]'}]
    )
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator", tools=[WEATHER])
    assert run.status == "requires_action"
    (step,) = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    assert step.status == "in_progress" and step.usage is None and step.completed_at is None
    assert step.step_details.tool_calls[0].id == call_id and step.step_details.tool_calls[0].function.output is None

    run = sdk.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call_id, "output": "sunny"}]
    )
    assert run.status == "completed"
    steps = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    assert steps[0].id == step.id and steps[0].step_details.tool_calls[0].function.output == "sunny"


def test_cancelling_a_run_that_waits_for_outputs_cancels_its_step(sdk, engine_name):
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": 'w [fake call=get_weather args={"city": "Oslo"}]'}]
    )
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator", tools=[WEATHER])
    sdk.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    (step,) = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert step.status == "cancelled" and step.cancelled_at is not None


class Recorder(openai.AssistantEventHandler):
    """Notes the events and the handler calls a streamed run makes."""

    def __init__(self):
        super().__init__()
        self.events: list[str] = []
        self.calls: list[tuple] = []

    def on_event(self, event):
        name = event.event
        if name.startswith("thread.run.step."):
            name = f"{name}:{event.data.step_details.type if name != 'thread.run.step.delta' else 'delta'}"
        self.events.append(name)

    def on_run_step_created(self, run_step):
        self.calls.append(("step_created", run_step.type))

    def on_tool_call_created(self, tool_call):
        self.calls.append(("tool_call_created", tool_call.function.name))

    def on_tool_call_done(self, tool_call):
        self.calls.append(("tool_call_done", tool_call.function.name))

    def on_run_step_done(self, run_step):
        self.calls.append(("step_done", run_step.type, run_step.status))


def test_a_streamed_run_sends_its_steps_in_place_and_the_handlers_fire(sdk, fake, engine_name):
    thread = sdk.beta.threads.create(messages=[{"role": "user", "content": ADD}])
    handler = Recorder()
    with sdk.beta.threads.runs.stream(thread_id=thread.id, assistant_id="curator", event_handler=handler) as stream:
        stream.until_done()
        run = stream.get_final_run()
    assert run.status == "completed"
    steps = [
        e for e in handler.events if e.startswith(("thread.run.step", "thread.message.created", "thread.run.completed"))
    ]
    assert steps == [
        "thread.run.step.created:tool_calls",
        "thread.run.step.in_progress:tool_calls",
        "thread.run.step.delta:delta",
        "thread.run.step.completed:tool_calls",
        "thread.run.step.created:message_creation",
        "thread.run.step.in_progress:message_creation",
        "thread.message.created",
        "thread.run.step.completed:message_creation",
        "thread.run.completed",
    ]
    assert handler.events.index("thread.message.completed") < handler.events.index(
        "thread.run.step.completed:message_creation"
    )
    # The SDK fires on_tool_call_done again on later step and run ends (it keeps its last call).
    assert [c for c in handler.calls if c[0] != "tool_call_done"] == [
        ("step_created", "tool_calls"),
        ("tool_call_created", "add"),
        ("step_done", "tool_calls", "completed"),
        ("step_created", "message_creation"),
        ("step_done", "message_creation", "completed"),
    ]
    assert handler.calls[:3] == [
        ("step_created", "tool_calls"),
        ("tool_call_created", "add"),
        ("tool_call_done", "add"),
    ]
    kept = sdk.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [s.type for s in kept] == ["tool_calls", "message_creation"]
    assert kept[0].step_details.tool_calls[0].function.output == "42" == upstream_outputs(fake, engine_name)[0]


def test_a_client_tool_stream_creates_the_step_and_the_submit_stream_ends_it(sdk, engine_name):
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": 'w [fake call=get_weather args={"city": "Rome"}]'}]
    )
    first = Recorder()
    with sdk.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id="curator", tools=[WEATHER], event_handler=first
    ) as stream:
        stream.until_done()
        run = stream.get_final_run()
    assert run.status == "requires_action"
    assert first.calls == [
        ("step_created", "tool_calls"),
        ("tool_call_created", "get_weather"),
        ("tool_call_done", "get_weather"),
    ]
    call_id = run.required_action.submit_tool_outputs.tool_calls[0].id
    second = Recorder()
    with sdk.beta.threads.runs.submit_tool_outputs_stream(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": call_id, "output": "sunny"}],
        event_handler=second,
    ) as stream:
        stream.until_done()
    assert second.calls[0] == ("step_done", "tool_calls", "completed")
    assert ("step_created", "message_creation") in second.calls


def test_started_at_is_the_first_sight_of_the_run_started():
    plan = RunPlan("thread_1", "alice", AssistantType("curator", None, "gpt-4o"), None, None)
    plan.run_id, plan.created_at = "resp_1", 1000
    upstream = {"id": "resp_1", "created_at": 1000, "started_at": None, "status": "queued", "usage": None}
    assert plan.present(upstream)["started_at"] is None  # queued: not started
    seen = int(time.time())
    assert plan.present(dict(upstream, status="in_progress"))["started_at"] >= seen
    assert plan.present(dict(upstream, status="completed"))["started_at"] == plan.started_at  # recorded once
    assert started_at(None, dict(upstream, started_at=1003, status="completed")) == 1003  # the upstream's own


def test_runs_and_replies_tell_when_they_started_and_completed(make_app, fake, engine_name):
    api = Api(make_app().test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, "slowly [fake duration=0.6]")
    run = api.run(thread).json
    assert run["status"] == "completed"
    assert run["created_at"] <= run["started_at"] <= run["completed_at"]
    reply = api.get(f"/threads/{thread}/messages?limit=1").json["data"][0]
    assert reply["role"] == "assistant" and reply["completed_at"] is not None
    assert api.get(f"/threads/{thread}/runs/{run['id']}").json["started_at"] == run["started_at"]


def test_steps_are_the_owners_and_their_runs_only(tools_app, engine_name):
    api = Api(tools_app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, "hi [fake duration=0.05]")
    first = api.run(thread).json["id"]
    api.say(thread, "again [fake duration=0.05]")
    second = api.run(thread).json["id"]
    (step,) = api.get(f"/threads/{thread}/runs/{first}/steps").json["data"]
    assert step["type"] == "message_creation" and step["run_id"] == first
    assert api.get(f"/threads/{thread}/runs/{first}/steps/{step['id']}").json == step
    assert api.get(f"/threads/{thread}/runs/{second}/steps/{step['id']}").status_code == 404  # another run's
    bob = api.as_user("bob")
    assert bob.get(f"/threads/{thread}/runs/{first}/steps/{step['id']}").status_code == 404
    assert bob.under("/v1").get(f"/threads/{thread}/runs/{first}/steps").status_code == 404
    bad = api.get(f"/threads/{thread}/runs/{first}/steps?include[]=step_details.everything")
    assert bad.status_code == 400 and "include[]" in bad.json["error"]
    content = "step_details.tool_calls[*].file_search.results[*].content"
    assert api.get(f"/threads/{thread}/runs/{first}/steps", query_string={"include[]": content}).status_code == 200
    assert api.get(f"/threads/{thread}/runs/run_nothing/steps").status_code == 404


def test_file_search_results_keep_their_content_only_when_included():
    results = [{"file_id": "file_1", "file_name": "a.txt", "score": 0.9, "content": [{"type": "text", "text": "A"}]}]
    search = {"id": "call_1", "type": "file_search", "file_search": {"ranking_options": {}, "results": results}}
    step = new_step(
        {"id": "run_1", "thread_id": "thread_1"}, "tool_calls", {"type": "tool_calls", "tool_calls": [search]}
    )
    plain = with_content(step, ())
    assert "content" not in plain["step_details"]["tool_calls"][0]["file_search"]["results"][0]
    assert step["step_details"]["tool_calls"][0]["file_search"]["results"] == results  # not changed in place
    assert with_content(step, (FILE_SEARCH_CONTENT,)) == step


def test_a_tool_the_upstream_ran_is_its_step_before_the_reply(monkeypatch):
    """A kind of call the upstream runs itself (file_search, once STEP_CALLS knows it) is told from
    the upstream events as soon as it is done, so that its step comes before the reply's."""
    monkeypatch.setitem(
        responses.STEP_CALLS,
        "file_search_call",
        lambda item: {"id": item["id"], "type": "file_search", "file_search": {}},
    )
    told = []

    class Listener:
        def tool_calls_made(self, calls):
            told.append(calls)

    follower = responses._Follower(None, "conv_1")
    for item in ({"type": "file_search_call", "id": "fs_1"}, {"type": "message", "id": "msg_1"}):
        follower._tell({"type": "response.output_item.done", "item": item}, Listener())
    assert told == [[{"id": "fs_1", "type": "file_search", "file_search": {}}]]

    database = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    metadata.create_all(database)
    records, sent = Records(database), []
    book = StepBook(records, RunEvents(lambda name, data: sent.append(name)))
    book.run = {"id": "resp_1", "thread_id": "conv_1", "assistant_id": "curator", "status": "in_progress"}
    book.calls_made(told[0], answered=True)
    book.reply_started("msg_1")
    book.calls_made(told[0], answered=True)  # the round's end tells the same call again: no second step
    book.reply_done("msg_1", {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3})
    steps = records.list_steps("resp_1", MessagePage(order="asc"))["data"]
    assert [(s["type"], s["status"]) for s in steps] == [("tool_calls", "completed"), ("message_creation", "completed")]
    assert steps[0]["usage"] is None and steps[1]["usage"]["total_tokens"] == 3  # the round's usage, on its reply
    assert sent == [
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.step.completed",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.completed",
    ]

"""Function calling: server tools the backend runs in rounds inside the deadline, and the
client's tools answered through submit_tool_outputs (also with the official SDK)."""

from __future__ import annotations

import json
import time

import openai
import pytest

from app.environment import CANCEL_GRACE_SECONDS
from app.settings import ConfigError, load_settings
from app.tools import tool_from_function
from tests import tool_handlers
from tests.helpers import RUN_CREATE, TOKENS, Api, upstream_calls

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

SERVER_TOOLS = ",".join(f"tests.tool_handlers:{name}" for name in ("add", "meet", "explode", "sleep_for", "locate"))
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


@pytest.fixture(autouse=True)
def fresh_handlers():
    tool_handlers.reset()


@pytest.fixture
def tools_app(make_app):
    return make_app(ASSISTANT_CURATOR_TOOLS=SERVER_TOOLS)


@pytest.fixture
def api(tools_app):
    return Api(tools_app.test_client(), TOKENS["alice"])


def reply(api, thread):
    return api.get(f"/threads/{thread}/messages?limit=1").json["data"][0]["content"][0]["text"]["value"]


def declared_upstream(fake, engine_name):
    """The function tools the last upstream run was created with, by name."""
    with fake.lock:
        job = list(fake.responses.values() if engine_name == "responses" else fake.runs.values())[-1]
        tools = job.tools
    return {t.get("name") or t["function"]["name"]: t.get("parameters") or t["function"]["parameters"] for t in tools}


def test_a_server_tool_is_called_and_its_result_reaches_the_reply(api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, 'sum [fake call=add args={"a": 2, "b": 40}]')
    answer = api.run(thread)
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "completed"
    assert tool_handlers.calls == [("add", {"a": 2, "b": 40})]
    assert "add -> 42" in reply(api, thread)
    schema = declared_upstream(fake, engine_name)["add"]
    assert schema == {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
        "additionalProperties": False,
    }
    assert {t["function"]["name"] for t in answer.json["tools"]} == {"add", "meet", "explode", "sleep_for", "locate"}


def test_one_run_id_through_several_rounds_with_usage_added_up(api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, 'twice [fake call=add args={"a": 1, "b": 1} rounds=3]')
    answer = api.run(thread)
    assert answer.status_code == 200, answer.json
    run = answer.json
    assert len(tool_handlers.calls) == 3
    if engine_name == "responses":  # each model turn is a new response; the client sees the first one's ID
        assert upstream_calls(fake, RUN_CREATE[engine_name]) == 4
    else:
        assert upstream_calls(fake, RUN_CREATE[engine_name]) == 1
        assert upstream_calls(fake, "POST /v1/threads/{thread_id}/runs/{run_id}/submit_tool_outputs") == 3
    retrieved = api.get(f"/threads/{thread}/runs/{run['id']}").json
    assert retrieved["id"] == run["id"] and retrieved["status"] == "completed"
    assert retrieved["usage"] == run["usage"]
    messages = api.get(f"/threads/{thread}/messages?run_id={run['id']}").json["data"]
    assert [m["role"] for m in messages] == ["assistant"] and messages[0]["run_id"] == run["id"]
    single = api.new_thread()
    api.say(single, "twice")
    alone = api.run(single).json
    assert run["usage"]["total_tokens"] > alone["usage"]["total_tokens"]


def test_parallel_calls_of_one_turn_run_side_by_side(api, engine_name):
    thread = api.new_thread()
    api.say(thread, 'both [fake call=meet args={"name": "ada"} call=meet args={"name": "bob"}]')
    answer = api.run(thread)
    assert answer.status_code == 200, answer.json
    text = reply(api, thread)
    assert "meet -> met ada" in text and "meet -> met bob" in text


def test_a_failing_handler_gives_the_model_the_error_and_logs_its_traceback(api, caplog, engine_name):
    thread = api.new_thread()
    api.say(thread, 'boom [fake call=explode args={"reason": "on purpose"}]')
    answer = api.run(thread)
    assert answer.status_code == 200, answer.json
    assert "explode -> Error: RuntimeError: exploded: on purpose" in reply(api, thread)
    logged = [r for r in caplog.records if r.name == "app.tools" and r.exc_info]
    assert logged and answer.json["id"] in logged[0].getMessage()
    assert "Traceback" not in reply(api, thread)


def test_invalid_arguments_are_refused_before_the_handler(api, engine_name):
    thread = api.new_thread()
    api.say(thread, 'bad [fake call=add args={"a": "two", "c": 1}]')
    answer = api.run(thread)
    assert answer.status_code == 200, answer.json
    text = reply(api, thread)
    assert "add -> Error: invalid arguments for add:" in text
    assert "a: Input should be a valid integer" in text and "b: Field required" in text
    assert tool_handlers.calls == []


def test_a_handler_slower_than_the_deadline_gives_408_in_time_and_a_usable_thread(make_app, engine_name):
    app = make_app(ASSISTANT_CURATOR_TOOLS=SERVER_TOOLS, RUN_TIMEOUT_SECONDS=2, UPSTREAM_TIMEOUT_SECONDS=1)
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, 'slow [fake call=sleep_for args={"seconds": 6}]')
    started = time.monotonic()
    answer = api.run(thread)
    assert answer.status_code == 408, answer.json
    assert time.monotonic() - started < 2 + CANCEL_GRACE_SECONDS
    assert answer.json["run"]["status"] == "cancelled"
    api.say(thread, "again")
    assert api.run(thread).status_code == 200


def test_too_many_rounds_end_the_run_with_a_clear_error(make_app, engine_name):
    app = make_app(ASSISTANT_CURATOR_TOOLS=SERVER_TOOLS, TOOL_MAX_ROUNDS=3)
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, 'loop [fake call=add args={"a": 1, "b": 2} rounds=5]')
    answer = api.run(thread)
    assert answer.status_code == 500
    assert "after 3 turns (TOOL_MAX_ROUNDS)" in answer.json["error"]
    assert answer.json["run"]["last_error"]["code"] == "max_tool_rounds"
    assert len(tool_handlers.calls) == 2  # the third turn's calls are closed, not run
    api.say(thread, "again")
    assert api.run(thread).status_code == 200


def test_a_tool_neither_side_has_keeps_the_seed_answer_and_a_usable_thread(api, engine_name):
    thread = api.new_thread()
    api.say(thread, "weather [fake status=requires_action]")
    answer = api.run(thread)
    assert answer.status_code == 400
    assert answer.json["error"] == "Run requires action (function calling not implemented)"
    api.say(thread, "again")
    assert api.run(thread).status_code == 200


def test_client_tools_are_validated(api):
    thread = api.new_thread()
    bad = [
        ("x", "must be an array"),
        ([{"type": "code_interpreter"}], "only function tools"),
        ([{"type": "function", "function": {"name": "bad name"}}], "'name' must be"),
        ([{"type": "function", "function": {"name": "f", "parameters": []}}], "'parameters' must be"),
        ([{"type": "function", "function": {"name": "add"}}], "already declared"),
        ([WEATHER] * 2, "already declared"),
        ([{"type": "function", "function": {"name": f"t{i}"}} for i in range(129)], "at most 128"),
    ]
    for tools, message in bad:
        answer = api.run(thread, tools=tools)
        assert answer.status_code == 400 and message in answer.json["error"], (tools, answer.json)


def test_mixed_turn_runs_the_server_tool_and_asks_the_client_for_the_rest(api, engine_name):
    thread = api.new_thread()
    api.say(thread, 'mix [fake call=add args={"a": 3, "b": 4} call=get_weather args={"city": "Oslo"}]')
    answer = api.run(thread, tools=[WEATHER])
    assert answer.status_code == 200, answer.json
    run = answer.json
    assert run["status"] == "requires_action"
    calls = run["required_action"]["submit_tool_outputs"]["tool_calls"]
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Oslo"})
    ]
    assert tool_handlers.calls == [("add", {"a": 3, "b": 4})]
    busy = api.run(thread)
    assert busy.status_code == 409  # the thread waits for the outputs
    submitted = api.post(
        f"/threads/{thread}/runs/{run['id']}/submit_tool_outputs",
        json={"tool_outputs": [{"tool_call_id": calls[0]["id"], "output": "rainy"}]},
    )
    assert submitted.status_code == 200, submitted.json
    assert submitted.json["id"] == run["id"] and submitted.json["status"] == "completed"
    text = reply(api, thread)
    assert "add -> 7" in text and "get_weather -> rainy" in text


def test_submit_checks_owner_and_call_ids_and_the_run_keeps_waiting(api, engine_name):
    thread = api.new_thread()
    api.say(thread, 'ask [fake call=get_weather args={"city": "Oslo"}]')
    run = api.run(thread, tools=[WEATHER]).json
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    path = f"/threads/{thread}/runs/{run['id']}/submit_tool_outputs"
    wrong = api.post(path, json={"tool_outputs": [{"tool_call_id": "call_unknown", "output": "x"}]})
    assert wrong.status_code == 400 and "call_unknown" in wrong.json["error"]
    twice = api.post(path, json={"tool_outputs": [{"tool_call_id": call_id, "output": "x"}] * 2})
    assert twice.status_code == 400 and "more than once" in twice.json["error"]
    assert api.post(path, json={"tool_outputs": []}).status_code == 400
    assert (
        api.as_user("bob").post(path, json={"tool_outputs": [{"tool_call_id": call_id, "output": "x"}]}).status_code
        == 404
    )
    assert api.get(f"/threads/{thread}/runs/{run['id']}").json["status"] == "requires_action"
    done = api.post(path, json={"tool_outputs": [{"tool_call_id": call_id, "output": "sunny"}]})
    assert done.status_code == 200 and done.json["status"] == "completed"
    again = api.post(path, json={"tool_outputs": [{"tool_call_id": call_id, "output": "sunny"}]})
    assert again.status_code == 400 and "do not accept tool outputs" in again.json["error"]


def test_an_idempotent_retry_of_a_submit_is_answered_once(api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, 'ask [fake call=get_weather args={"city": "Oslo"}]')
    run = api.run(thread, tools=[WEATHER]).json
    call_id = run["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    path = f"/threads/{thread}/runs/{run['id']}/submit_tool_outputs"
    body = {"tool_outputs": [{"tool_call_id": call_id, "output": "sunny"}]}
    before = upstream_calls(fake, writes_only=True)
    first = api.post(path, json=body, headers={"Idempotency-Key": "submit-1"})
    second = api.post(path, json=body, headers={"Idempotency-Key": "submit-1"})
    assert first.status_code == second.status_code == 200
    assert first.json == second.json
    assert upstream_calls(fake, writes_only=True) == before + 1


def test_a_run_waiting_for_outputs_expires_and_frees_its_thread(make_app, engine_name):
    app = make_app(TOOL_OUTPUTS_TIMEOUT_SECONDS=1)
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, 'ask [fake call=get_weather args={"city": "Oslo"}]')
    run = api.run(thread, tools=[WEATHER]).json
    assert run["status"] == "requires_action" and run["expires_at"] >= run["created_at"]
    time.sleep(1.1)
    assert api.get(f"/threads/{thread}/runs/{run['id']}").json["status"] == "expired"
    api.say(thread, "again")
    assert api.run(thread).status_code == 200


def test_cancelling_a_run_waiting_for_outputs_frees_its_thread(api, engine_name):
    thread = api.new_thread()
    api.say(thread, 'ask [fake call=get_weather args={"city": "Oslo"}]')
    run = api.run(thread, tools=[WEATHER]).json
    cancelled = api.post(f"/threads/{thread}/runs/{run['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json["status"] == "cancelled"
    api.say(thread, "again")
    assert api.run(thread).status_code == 200


@pytest.fixture
def sdk(tools_app):
    from tests.helpers import ServerThread

    server = ServerThread(tools_app)
    client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{server.url}/api/openai")
    yield client
    client.close()
    server.stop()


def _weather_outputs(run):
    return [
        {"tool_call_id": c.id, "output": f"sunny in {json.loads(c.function.arguments)['city']}"}
        for c in run.required_action.submit_tool_outputs.tool_calls
    ]


def test_the_sdk_round_trip_with_create_and_submit_tool_outputs(sdk, engine_name):
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": 'w [fake call=get_weather args={"city": "Rome"}]'}]
    )
    run = sdk.beta.threads.runs.create(thread_id=thread.id, assistant_id="curator", tools=[WEATHER])
    assert run.status == "requires_action"
    assert run.required_action.submit_tool_outputs.tool_calls[0].function.name == "get_weather"
    run = sdk.beta.threads.runs.submit_tool_outputs(run.id, thread_id=thread.id, tool_outputs=_weather_outputs(run))
    assert run.status == "completed"
    text = sdk.beta.threads.messages.list(thread.id, limit=1).data[0].content[0].text.value
    assert "get_weather -> sunny in Rome" in text


def test_the_sdk_pollers_create_and_poll_and_submit_tool_outputs_and_poll(sdk, engine_name):
    thread = sdk.beta.threads.create(
        messages=[{"role": "user", "content": 'w [fake call=get_weather args={"city": "Oslo"}]'}]
    )
    run = sdk.beta.threads.runs.create_and_poll(thread_id=thread.id, assistant_id="curator", tools=[WEATHER])
    assert run.status == "requires_action"
    run = sdk.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id, thread_id=thread.id, tool_outputs=_weather_outputs(run)
    )
    assert run.status == "completed"
    with pytest.raises(openai.BadRequestError):
        sdk.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "x", "output": "y"}]
        )


def test_tool_schemas_come_from_type_hints():
    locate = tool_from_function(tool_handlers.locate)
    assert locate.strict is False  # a nested model and a default
    assert locate.parameters["required"] == ["address"]
    assert locate.description == "A nested model and a default: not strict."
    add = tool_from_function(tool_handlers.add)
    assert add.strict is True and add.description == "Add two integers."


@pytest.mark.parametrize(
    "paths,reason",
    [
        ("tests.tool_handlers:missing", "cannot import tests.tool_handlers:missing"),
        ("no.such.module:f", "cannot import no.such.module:f"),
        ("tests.tool_handlers", "is not of the form package.module:function"),
        ("tests.tool_handlers:no_hints", "parameter 'a' has no type hint"),
        ("tests.tool_handlers:add,tests.tool_handlers:add", "two tools are named 'add'"),
    ],
)
def test_a_bad_tools_variable_stops_the_start_naming_it(base_env, paths, reason):
    with pytest.raises(ConfigError) as raised:
        load_settings({**base_env, "ASSISTANT_CURATOR_TOOLS": paths})
    assert str(raised.value).startswith("ASSISTANT_CURATOR_TOOLS: ") and reason in str(raised.value)


def test_rounds_read_the_upstream_stream_when_the_wait_streams(make_app, fake):
    app = make_app(ASSISTANT_CURATOR_TOOLS=SERVER_TOOLS, WAIT_STRATEGY="stream", OPENAI_ENGINE="responses")
    api = Api(app.test_client(), TOKENS["alice"])
    thread = api.new_thread()
    api.say(thread, 'sum [fake call=add args={"a": 5, "b": 6} rounds=2]')
    answer = api.run(thread)
    assert answer.status_code == 200, answer.json
    assert "add -> 11 | add -> 11" in reply(api, thread)
    assert upstream_calls(fake, "GET /v1/responses/{response_id}") == 0  # every round was read from its stream

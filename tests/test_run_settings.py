"""Per-run settings and the type's client tools through `/v1` with the official SDK, on both engines,
asserting what the upstream received and what the run shows."""

from __future__ import annotations

import json

import openai
import pytest

from tests.helpers import RUN_CREATE, TOKENS, ServerThread, background_run, upstream_calls

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "year": {"type": "integer"}},
    "required": ["title", "year"],
    "additionalProperties": False,
}
LONG = " ".join(f"word{i}" for i in range(300))
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def serve(make_app):
    """An SDK client of `/v1` on an app built with these settings."""
    servers, clients = [], []

    def build(**overrides):
        server = ServerThread(make_app(**overrides))
        client = openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{server.url}/v1", max_retries=0)
        servers.append(server)
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()
    for server in servers:
        server.stop()


@pytest.fixture
def sdk(serve):
    return serve()


def created_body(fake, engine_name):
    """The body of the last run the upstream was asked to create."""
    return fake.last_body(RUN_CREATE[engine_name])


def thread_saying(sdk, text):
    thread = sdk.beta.threads.create()
    sdk.beta.threads.messages.create(thread.id, role="user", content=text)
    return thread.id


def test_a_json_schema_response_format_reaches_the_upstream_exactly(sdk, fake, engine_name):
    thread_id = thread_saying(sdk, "Dune [fake duration=0.1]")
    response_format = {"type": "json_schema", "json_schema": {"name": "book", "schema": SCHEMA, "strict": True}}
    run = sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", response_format=response_format)
    assert run.status == "completed"
    sent = created_body(fake, engine_name)
    if engine_name == "responses":
        assert sent["text"] == {"format": {"type": "json_schema", "name": "book", "schema": SCHEMA, "strict": True}}
        assert "response_format" not in sent
    else:
        assert sent["response_format"] == response_format
    shown = sdk.beta.threads.runs.retrieve(run.id, thread_id=thread_id)
    for answer in (run, shown):
        assert answer.response_format.model_dump(by_alias=True, exclude_none=True) == response_format
    reply = sdk.beta.threads.messages.list(thread_id, limit=1).data[0].content[0].text.value
    assert json.loads(reply) == {"title": "Echo: Dune", "year": 0}


def test_max_completion_tokens_is_max_output_tokens_upstream_and_a_run_that_hits_it_is_incomplete(
    sdk, fake, engine_name
):
    thread_id = thread_saying(sdk, LONG + " [fake duration=0.1]")
    run = sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", max_completion_tokens=256)
    sent = created_body(fake, engine_name)
    if engine_name == "responses":
        assert sent["max_output_tokens"] == 256 and "max_completion_tokens" not in sent
    else:
        assert sent["max_completion_tokens"] == 256
    shown = sdk.beta.threads.runs.retrieve(run.id, thread_id=thread_id)
    for answer in (run, shown):
        assert answer.status == "incomplete"
        assert answer.incomplete_details.reason == "max_completion_tokens"
        assert answer.max_completion_tokens == 256
    assert run.usage.completion_tokens == 256
    reply = sdk.beta.threads.messages.list(thread_id, limit=1).data[0]
    assert reply.run_id == run.id and len(reply.content[0].text.value.split()) == 256


def test_additional_instructions_and_messages(sdk, fake, engine_name):
    thread_id = thread_saying(sdk, "first")
    run = sdk.beta.threads.runs.create(
        thread_id=thread_id,
        assistant_id="curator",
        additional_instructions="Answer in French.",
        additional_messages=[
            {"role": "assistant", "content": "Which painting?"},
            {"role": "user", "content": "The Mona Lisa [fake duration=0.1]", "metadata": {"from": "sidebar"}},
        ],
    )
    assert run.status == "completed"
    sent = created_body(fake, engine_name)
    if engine_name == "responses":
        assert sent["instructions"] == "You are a curator. Be brief.\n\nAnswer in French."
        assert run.instructions == "You are a curator. Be brief.\n\nAnswer in French."
    else:
        assert sent["additional_instructions"] == "Answer in French."
        assert [m["content"] for m in sent["additional_messages"]] == [
            "Which painting?",
            "The Mona Lisa [fake duration=0.1]",
        ]
    messages = sdk.beta.threads.messages.list(thread_id, order="asc").data
    assert [(m.role, m.content[0].text.value) for m in messages] == [
        ("user", "first"),
        ("assistant", "Which painting?"),
        ("user", "The Mona Lisa [fake duration=0.1]"),
        ("assistant", "Echo: The Mona Lisa"),
    ]
    assert messages[2].metadata == {"from": "sidebar"}
    assert messages[3].run_id == run.id


def test_tool_choice_parallel_calls_truncation_and_metadata(serve, fake, engine_name):
    sdk = serve(ASSISTANT_CURATOR_CLIENT_TOOLS=json.dumps([WEATHER]))
    thread_id = thread_saying(sdk, 'w [fake call=get_weather args={"city": "Rome"} duration=0.1]')
    choice = {"type": "function", "function": {"name": "get_weather"}}
    run = sdk.beta.threads.runs.create(
        thread_id=thread_id,
        assistant_id="curator",
        tool_choice=choice,
        parallel_tool_calls=False,
        truncation_strategy={"type": "auto"},
        metadata={"session": "s-1"},
    )
    assert run.status == "requires_action"
    sent = created_body(fake, engine_name)
    if engine_name == "responses":
        assert sent["tool_choice"] == {"type": "function", "name": "get_weather"}
        assert sent["truncation"] == "auto"
        assert sent["metadata"] == {"assistant_id": "asst_curator"}  # the client's is kept by the backend
    else:
        assert sent["tool_choice"] == choice
        assert sent["truncation_strategy"] == {"type": "auto", "last_messages": None}
        assert sent["metadata"] == {"session": "s-1"}
    assert sent["parallel_tool_calls"] is False
    call = run.required_action.submit_tool_outputs.tool_calls[0]
    done = sdk.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread_id, tool_outputs=[{"tool_call_id": call.id, "output": "sunny"}]
    )
    assert done.status == "completed"
    if engine_name == "responses":  # the forced choice is not forced again after the outputs
        assert "tool_choice" not in created_body(fake, engine_name)
    shown = sdk.beta.threads.runs.retrieve(run.id, thread_id=thread_id)
    for answer in (run, done, shown):
        assert answer.tool_choice.model_dump() == choice
        assert answer.parallel_tool_calls is False
        assert answer.truncation_strategy.model_dump() == {"type": "auto", "last_messages": None}
        assert answer.metadata == {"session": "s-1"}


def test_an_active_run_shows_its_settings_when_read_from_the_upstream(api, fake):
    thread_id = api.new_thread()
    api.say(thread_id, "slow [fake duration=1.5]")
    with background_run(api, thread_id, metadata={"k": "v"}, tool_choice="none") as (pending, run_id):
        looked = api.get(f"/threads/{thread_id}/runs/{run_id}").json
        assert looked["status"] in ("queued", "in_progress")
        assert looked["metadata"] == {"k": "v"} and looked["tool_choice"] == "none"
    assert pending.result().json["metadata"] == {"k": "v"}


def test_settings_the_responses_api_cannot_honour_are_refused_and_nothing_is_created(sdk, fake, engine_name):
    for settings in (
        {"max_prompt_tokens": 1000},
        {"truncation_strategy": {"type": "last_messages", "last_messages": 2}},
    ):
        thread_id = thread_saying(sdk, "hi [fake duration=0.1]")
        if engine_name == "responses":
            with pytest.raises(openai.BadRequestError) as refused:
                sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", **settings)
            assert f"'{next(iter(settings))}'" in refused.value.message
            assert "Responses API" in refused.value.message
            assert upstream_calls(fake, RUN_CREATE[engine_name]) == 0
        else:
            run = sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", **settings)
            assert run.status == "completed"
            name, value = next(iter(settings.items()))
            assert created_body(fake, engine_name)[name] == value
            shown = getattr(run, name)
            assert (shown if isinstance(shown, int) else shown.model_dump()) == value


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"max_completion_tokens": 255}, "max_completion_tokens"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "a b"}}},
            "response_format.json_schema.name",
        ),
        ({"tool_choice": {"type": "function", "function": {"name": "nowhere"}}}, "tool_choice.function.name"),
        ({"additional_messages": [{"role": "system", "content": "x"}]}, "additional_messages[0]"),
        ({"instructions": "Be someone else."}, "instructions"),
        ({"model": "gpt-5"}, "model"),
        ({"metadata": {"k": 1}}, "metadata"),
    ],
)
def test_a_bad_setting_is_a_400_naming_it_and_never_reaches_the_upstream(sdk, fake, engine_name, settings, named):
    thread_id = thread_saying(sdk, "hi")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", **settings)
    assert f"'{named}" in refused.value.message
    assert upstream_calls(fake, RUN_CREATE[engine_name]) == 0
    assert len(sdk.beta.threads.messages.list(thread_id).data) == 1


def test_allowed_overrides_replace_the_types_instructions_and_model(serve, fake, engine_name):
    sdk = serve(ASSISTANT_CURATOR_ALLOW_OVERRIDES="instructions,model")
    thread_id = thread_saying(sdk, "hi [fake duration=0.1]")
    run = sdk.beta.threads.runs.create(
        thread_id=thread_id, assistant_id="curator", instructions="Be a poet.", model="gpt-4o-mini"
    )
    assert run.status == "completed" and run.model == "gpt-4o-mini"
    sent = created_body(fake, engine_name)
    assert sent["instructions"] == "Be a poet." and sent["model"] == "gpt-4o-mini"


def test_the_types_client_tools_answered_with_submit_tool_outputs_stream(serve, fake, engine_name):
    """OpenAI's Assistants sample frontend: the assistant carries the tools, the run sends none."""
    sdk = serve(ASSISTANT_CURATOR_CLIENT_TOOLS=json.dumps([WEATHER]))
    thread_id = thread_saying(sdk, 'weather? [fake call=get_weather args={"city": "Oslo"} duration=0.2]')
    with sdk.beta.threads.runs.stream(thread_id=thread_id, assistant_id="curator") as stream:
        events = list(stream)
    assert events[-1].event == "thread.run.requires_action"
    run = events[-1].data
    assert [t.function.name for t in run.tools] == ["get_weather"]
    declared = created_body(fake, engine_name)["tools"]
    if engine_name == "responses":
        assert declared == [{"type": "function", **WEATHER["function"], "strict": False}]
    else:
        assert declared == [{"type": "function", "function": {**WEATHER["function"], "strict": False}}]
    calls = run.required_action.submit_tool_outputs.tool_calls
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [("get_weather", {"city": "Oslo"})]
    with sdk.beta.threads.runs.submit_tool_outputs_stream(
        run_id=run.id, thread_id=thread_id, tool_outputs=[{"tool_call_id": calls[0].id, "output": "snow"}]
    ) as stream:
        rest = list(stream)
    assert rest[-1].event == "thread.run.completed" and rest[-1].data.id == run.id
    reply = sdk.beta.threads.messages.list(thread_id, limit=1).data[0].content[0].text.value
    assert "get_weather -> snow" in reply


def test_a_body_tool_named_like_a_types_client_tool_is_refused(serve, fake, engine_name):
    sdk = serve(ASSISTANT_CURATOR_CLIENT_TOOLS=json.dumps([WEATHER]))
    thread_id = thread_saying(sdk, "hi")
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.beta.threads.runs.create(thread_id=thread_id, assistant_id="curator", tools=[WEATHER])
    assert "'get_weather' is already declared" in refused.value.message
    assert upstream_calls(fake, RUN_CREATE[engine_name]) == 0

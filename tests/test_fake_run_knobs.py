"""The fake upstream's per-run knobs, through the official SDK: token limits, formats, tool choice,
truncation, echoed as OpenAI echoes them and refused where OpenAI refuses them."""

import json

import httpx2
import openai
import pytest

from fake_openai import create_fake_app
from tests.test_fake_openai import item_texts, reply_texts, start_run, wait_response, wait_run

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

LONG = " ".join(f"word{i}" for i in range(40))  # "Echo: " + 40 words: 41 tokens
VERY_LONG = " ".join(f"word{i}" for i in range(300))
SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "pages": {"type": "integer"}, "tags": {"type": "array"}},
    "required": ["title", "pages"],
    "additionalProperties": False,
}
LOOKUP = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


@pytest.fixture
def app():
    return create_fake_app(default_duration=0.05)


@pytest.fixture
def fake(app):
    return app.fake


@pytest.fixture
def client(app):
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app))
    with openai.OpenAI(api_key="sk-test", base_url="http://fake/v1", http_client=http, max_retries=0) as sdk:
        yield sdk


def start_response(client, words, **extra):
    """A background response on a new conversation, its input `words`."""
    conversation = client.conversations.create()
    response = client.responses.create(
        model="gpt-4o-mini", conversation=conversation.id, background=True, store=True, input=words, **extra
    )
    return conversation, response


def refused(call, param):
    with pytest.raises(openai.BadRequestError) as caught:
        call()
    assert caught.value.body["param"] == param, caught.value.body
    return caught.value.body


# --- Responses ------------------------------------------------------------------------------------------


def test_a_reply_longer_than_max_output_tokens_is_cut_and_incomplete(client, fake):
    conversation, response = start_response(client, LONG, max_output_tokens=16)
    assert response.max_output_tokens == 16
    done = wait_response(client, response.id)
    assert done.status == "incomplete"
    assert done.incomplete_details.reason == "max_output_tokens"
    text = done.output[0].content[0].text
    assert text == "Echo: " + " ".join(f"word{i}" for i in range(15))
    assert done.usage.output_tokens == 16
    assert item_texts(client, conversation.id)[-1] == ("assistant", text)


def test_a_reply_within_max_output_tokens_completes_whole(client):
    _, response = start_response(client, "short text", max_output_tokens=16)
    done = wait_response(client, response.id)
    assert done.status == "completed" and done.incomplete_details is None
    assert done.output[0].content[0].text == "Echo: short text"


@pytest.mark.parametrize("value", [15, 0, -3])
def test_max_output_tokens_below_16_is_refused(client, fake, value):
    body = refused(lambda: start_response(client, "hi", max_output_tokens=value), "max_output_tokens")
    assert body["code"] == "integer_below_min_value"
    assert not fake.responses


def test_json_schema_format_is_echoed_and_the_reply_fits_it(client):
    fmt = {"type": "json_schema", "name": "book", "schema": SCHEMA, "strict": True}
    _, response = start_response(client, "Dune", text={"format": fmt})
    done = wait_response(client, response.id)
    assert done.text.format.model_dump(by_alias=True, exclude_none=True) == fmt
    assert json.loads(done.output[0].content[0].text) == {"title": "Echo: Dune", "pages": 0}


def test_json_object_format_gives_a_json_object(client):
    _, response = start_response(client, "Dune", text={"format": {"type": "json_object"}})
    done = wait_response(client, response.id)
    assert done.text.format.type == "json_object"
    assert json.loads(done.output[0].content[0].text) == {"echo": "Echo: Dune"}


@pytest.mark.parametrize(
    ("fmt", "param"),
    [
        ({"type": "json_schema", "json_schema": {"name": "b", "schema": SCHEMA}}, "text.format.json_schema"),
        ({"type": "json_schema", "schema": SCHEMA}, "text.format.name"),
        ({"type": "json_schema", "name": "b"}, "text.format.schema"),
        ({"type": "json_schema", "name": "a b", "schema": SCHEMA}, "text.format.name"),
        ({"type": "json_schema", "name": "b", "schema": "x"}, "text.format.schema"),
        ({"type": "yaml"}, "text.format.type"),
        ({"type": "json_object", "name": "b"}, "text.format.name"),
    ],
)
def test_a_malformed_text_format_is_refused(client, fake, fmt, param):
    refused(lambda: start_response(client, "hi", text={"format": fmt}), param)
    assert not fake.responses


def test_tool_choice_parallel_calls_truncation_and_instructions_are_echoed(client, fake):
    _, response = start_response(
        client,
        "hi",
        tools=[LOOKUP],
        tool_choice={"type": "function", "name": "lookup"},
        parallel_tool_calls=False,
        truncation="auto",
        instructions="Be brief.\n\nIn French.",
    )
    assert response.tool_choice.model_dump() == {"type": "function", "name": "lookup"}
    assert response.parallel_tool_calls is False
    assert response.truncation == "auto"
    assert response.instructions == "Be brief.\n\nIn French."
    assert fake.last_body("POST /v1/responses")["tool_choice"] == {"type": "function", "name": "lookup"}
    _, plain = start_response(client, "hi")
    assert plain.truncation == "disabled" and plain.text.format.type == "text" and plain.tool_choice == "auto"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"tool_choice": {"type": "function", "name": "other"}, "tools": [LOOKUP]}, "tool_choice"),
        ({"tool_choice": {"type": "function", "function": {"name": "lookup"}}, "tools": [LOOKUP]}, "tool_choice.name"),
        ({"tool_choice": "sometimes"}, "tool_choice"),
        ({"truncation": "last_messages"}, "truncation"),
        ({"parallel_tool_calls": "no"}, "parallel_tool_calls"),
    ],
)
def test_bad_knobs_are_refused(client, fake, extra, param):
    refused(lambda: start_response(client, "hi", **extra), param)
    assert not fake.responses


def test_the_last_body_per_route_is_kept_and_served(app, client, fake):
    start_response(client, "hi", max_output_tokens=20)
    assert fake.last_body("POST /v1/responses")["max_output_tokens"] == 20
    assert fake.last_body("POST /v1/threads") is None
    served = app.test_client().get("/_fake/last_body", query_string={"route": "POST /v1/responses"}).json
    assert served["body"]["input"] == "hi"


# --- Assistants -------------------------------------------------------------------------------------------


def test_a_run_longer_than_max_completion_tokens_is_incomplete(client):
    thread, run = start_run(client, VERY_LONG, max_completion_tokens=256, max_prompt_tokens=1000)
    assert run.max_completion_tokens == 256 and run.max_prompt_tokens == 1000
    done = wait_run(client, thread.id, run.id)
    assert done.status == "incomplete"
    assert done.incomplete_details.reason == "max_completion_tokens"
    assert done.usage.completion_tokens == 256
    role, text = reply_texts(client, thread.id)[-1]
    assert role == "assistant" and len(text.split()) == 256


@pytest.mark.parametrize("name", ["max_completion_tokens", "max_prompt_tokens"])
def test_run_token_limits_below_256_are_refused(client, fake, name):
    body = refused(lambda: start_run(client, "hi", **{name: 255}), name)
    assert body["code"] == "integer_below_min_value"
    assert not fake.runs


def test_a_run_echoes_its_settings_and_adds_its_messages(client):
    fmt = {"type": "json_schema", "json_schema": {"name": "book", "schema": SCHEMA, "strict": True}}
    thread, run = start_run(
        client,
        "first",
        response_format=fmt,
        tool_choice={"type": "function", "function": {"name": "lookup"}},
        tools=[{"type": "function", "function": {"name": "lookup"}}],
        parallel_tool_calls=False,
        truncation_strategy={"type": "last_messages", "last_messages": 4},
        metadata={"session": "s-1"},
        instructions="Be brief.",
        additional_instructions="In French.",
        additional_messages=[{"role": "user", "content": "Dune"}],
    )
    assert run.response_format.model_dump(by_alias=True, exclude_none=True) == fmt
    assert run.tool_choice.model_dump() == {"type": "function", "function": {"name": "lookup"}}
    assert run.parallel_tool_calls is False
    assert run.truncation_strategy.model_dump() == {"type": "last_messages", "last_messages": 4}
    assert run.metadata == {"session": "s-1"}
    assert run.instructions == "Be brief.\n\nIn French."
    done = wait_run(client, thread.id, run.id)
    assert done.status == "completed"
    texts = reply_texts(client, thread.id)
    assert texts[:2] == [("user", "first"), ("user", "Dune")]
    assert json.loads(texts[-1][1]) == {"title": "Echo: Dune", "pages": 0}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (
            {"response_format": {"type": "json_schema", "json_schema": {"schema": SCHEMA}}},
            "response_format.json_schema.name",
        ),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"truncation_strategy": {"type": "middle"}}, "truncation_strategy.type"),
        ({"truncation_strategy": {"type": "last_messages", "last_messages": 0}}, "truncation_strategy.last_messages"),
        ({"tool_choice": {"type": "function", "function": {"name": "x"}}, "tools": []}, "tool_choice"),
    ],
)
def test_bad_run_knobs_are_refused(client, fake, extra, param):
    refused(lambda: start_run(client, "hi", **extra), param)
    assert not fake.runs


def test_a_streamed_reply_stops_at_max_output_tokens(client):
    stream = client.responses.create(model="gpt-4o", input=LONG, background=True, stream=True, max_output_tokens=16)
    events = list(stream)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == "Echo: " + " ".join(f"word{i}" for i in range(15))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"

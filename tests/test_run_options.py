"""Per-run settings (app/run_options.py): each parameter's checks, its mapping to each upstream, and what
the run shows; the type's client tools and allowed overrides (ASSISTANT_<TYPE>_CLIENT_TOOLS, _ALLOW_OVERRIDES)."""

from __future__ import annotations

import json

import pytest

from app import run_options as ro
from app.assistant_types import AssistantType
from app.environment import ConfigError
from app.errors import ApiError
from app.settings import load_settings
from app.tools import Tool

CURATOR = AssistantType(name="curator", model="gpt-4o", instructions="Be brief.", assistant_id="asst_curator")
OPEN = AssistantType(name="open", model="gpt-4o", allow_overrides=frozenset({"instructions", "model"}))
FUNCTIONS = {"lookup"}
SCHEMA = {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]}


def parse(body, assistant=CURATOR, engine="assistants", **kwargs):
    kwargs.setdefault("functions", FUNCTIONS)
    return ro.parse(body, assistant, engine=engine, **kwargs)


def refused(body, *names, assistant=CURATOR, engine="assistants", **kwargs) -> str:
    """The 400's message for `body`, which must name each of `names`."""
    with pytest.raises(ApiError) as caught:
        parse(body, assistant, engine, **kwargs)
    assert caught.value.status == 400
    for name in names:
        assert f"'{name}" in caught.value.message, caught.value.message
    return caught.value.message


def test_an_empty_body_sets_nothing_and_reports_the_assistants_defaults():
    options = parse({})
    assert options == ro.RunOptions()
    assert ro.assistants_fields(options) == {}
    assert ro.responses_fields(options, "Be brief.") == {"truncation": "auto", "instructions": "Be brief."}
    run = ro.reported(options, {"id": "run_1", "status": "completed", "incomplete_details": None})
    assert {k: run[k] for k in run if k not in ("id", "status", "incomplete_details")} == {
        "response_format": "auto",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "max_prompt_tokens": None,
        "max_completion_tokens": None,
        "metadata": {},
    }


# --- additional_instructions ----------------------------------------------------------------------------


def test_additional_instructions_follow_the_types_after_a_blank_line():
    options = parse({"additional_instructions": "Answer in French."})
    assert ro.responses_fields(options, "Be brief.")["instructions"] == "Be brief.\n\nAnswer in French."
    assert ro.responses_fields(options, None)["instructions"] == "Answer in French."
    assert ro.assistants_fields(options) == {"additional_instructions": "Answer in French."}


@pytest.mark.parametrize("value", [3, ["x"], {"text": "x"}, "x" * 101])
def test_bad_additional_instructions_are_refused(value):
    refused({"additional_instructions": value}, "additional_instructions", max_chars=100)


# --- additional_messages ----------------------------------------------------------------------------------


def test_additional_messages_are_checked_like_posted_messages_and_sent_to_each_upstream():
    body = {
        "additional_messages": [
            {"role": "user", "content": "First", "metadata": {"k": "v"}},
            {"role": "assistant", "content": [{"type": "text", "text": "Second"}]},
        ]
    }
    options = parse(body)
    assert options.additional_messages == (
        {"role": "user", "content": "First", "metadata": {"k": "v"}},
        {"role": "assistant", "content": "Second"},
    )
    assert ro.assistants_fields(options)["additional_messages"] == list(options.additional_messages)
    assert parse({"additional_messages": []}).additional_messages == ()


@pytest.mark.parametrize(
    "value",
    [
        {"role": "user", "content": "x"},
        [{"role": "user", "content": "x"}] * (ro.MAX_ADDITIONAL_MESSAGES + 1),
        ["hello"],
        [{"role": "system", "content": "x"}],
        [{"role": "user", "content": "  "}],
        [{"role": "user", "content": "x" * 101}],
        [{"role": "user", "content": "x", "metadata": {"k": 1}}],
        [{"role": "user", "content": "x", "extra": 1}],
        [{"role": "user", "content": "x", "attachments": [{"file_id": "file_1"}]}],
    ],
)
def test_bad_additional_messages_are_refused(value):
    refused({"additional_messages": value}, "additional_messages", max_chars=100)


# --- response_format ------------------------------------------------------------------------------------


def test_response_format_json_schema_is_flattened_for_responses_and_kept_for_assistants():
    json_schema = {"name": "book", "description": "A book", "schema": SCHEMA, "strict": True}
    options = parse({"response_format": {"type": "json_schema", "json_schema": json_schema}})
    assert ro.responses_fields(options, None)["text"] == {
        "format": {"type": "json_schema", "name": "book", "description": "A book", "schema": SCHEMA, "strict": True}
    }
    assert ro.assistants_fields(options)["response_format"] == {"type": "json_schema", "json_schema": json_schema}
    assert ro.reported(options, {})["response_format"] == {"type": "json_schema", "json_schema": json_schema}


def test_response_format_json_schema_sends_only_the_fields_given():
    options = parse({"response_format": {"type": "json_schema", "json_schema": {"name": "b", "schema": SCHEMA}}})
    assert ro.responses_fields(options, None)["text"] == {
        "format": {"type": "json_schema", "name": "b", "schema": SCHEMA}
    }


@pytest.mark.parametrize("kind", ["text", "json_object"])
def test_response_format_text_and_json_object_keep_their_shape(kind):
    options = parse({"response_format": {"type": kind}})
    assert ro.responses_fields(options, None)["text"] == {"format": {"type": kind}}
    assert ro.assistants_fields(options) == {"response_format": {"type": kind}}
    assert ro.reported(options, {})["response_format"] == {"type": kind}


def test_response_format_auto_sends_no_format():
    options = parse({"response_format": "auto"})
    assert "text" not in ro.responses_fields(options, None)
    assert ro.assistants_fields(options) == {"response_format": "auto"}
    assert ro.reported(options, {})["response_format"] == "auto"


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("json", "response_format"),
        ({"type": "xml"}, "response_format"),
        ({"type": "json_object", "schema": {}}, "response_format"),
        ({"type": "json_schema"}, "response_format"),
        ({"type": "json_schema", "name": "b", "schema": SCHEMA}, "response_format"),
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": SCHEMA}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "x" * 65}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "b", "schema": "{}"}}, "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "b"}}, "response_format.json_schema.schema"),
        (
            {"type": "json_schema", "json_schema": {"name": "b", "schema": SCHEMA, "strict": "yes"}},
            "response_format.json_schema.strict",
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "b", "schema": SCHEMA, "description": 5}},
            "response_format.json_schema.description",
        ),
        ({"type": "json_schema", "json_schema": {"name": "b", "extra": 1}}, "response_format.json_schema"),
    ],
)
def test_bad_response_formats_are_refused(value, named):
    refused({"response_format": value}, named)


# --- max_completion_tokens, max_prompt_tokens -------------------------------------------------------------


def test_max_completion_tokens_is_max_output_tokens_upstream():
    options = parse({"max_completion_tokens": 256})
    assert ro.responses_fields(options, None)["max_output_tokens"] == 256
    assert ro.assistants_fields(options) == {"max_completion_tokens": 256}
    assert ro.reported(options, {})["max_completion_tokens"] == 256


def test_max_prompt_tokens_goes_to_the_assistants_api_and_is_refused_on_responses():
    options = parse({"max_prompt_tokens": 1000})
    assert ro.assistants_fields(options) == {"max_prompt_tokens": 1000}
    assert ro.reported(options, {})["max_prompt_tokens"] == 1000
    message = refused({"max_prompt_tokens": 1000}, "max_prompt_tokens", engine="responses")
    assert "Responses API" in message
    with pytest.raises(ApiError):
        ro.responses_fields(options, None)


def test_token_limits_may_be_whole_numbers_written_as_decimals():
    options = parse(
        {"max_completion_tokens": 300.0, "truncation_strategy": {"type": "last_messages", "last_messages": 2.0}}
    )
    assert options.max_completion_tokens == 300 and isinstance(options.max_completion_tokens, int)
    assert options.truncation_strategy == {"type": "last_messages", "last_messages": 2}


@pytest.mark.parametrize("name", ["max_completion_tokens", "max_prompt_tokens"])
@pytest.mark.parametrize("value", [255, 0, -1, 300.5, "300", True, 2**31, 255.0])
def test_bad_token_limits_are_refused(name, value):
    refused({name: value}, name)


# --- truncation_strategy ----------------------------------------------------------------------------------


def test_truncation_auto_is_sent_to_responses_always():
    options = parse({"truncation_strategy": {"type": "auto"}})
    assert ro.responses_fields(options, None)["truncation"] == "auto"
    assert ro.assistants_fields(options) == {"truncation_strategy": {"type": "auto", "last_messages": None}}
    assert ro.reported(options, {})["truncation_strategy"] == {"type": "auto", "last_messages": None}
    assert parse({"truncation_strategy": {"type": "auto", "last_messages": None}}) == options


def test_truncation_last_messages_goes_to_the_assistants_api_and_is_refused_on_responses():
    body = {"truncation_strategy": {"type": "last_messages", "last_messages": 5}}
    options = parse(body)
    assert ro.assistants_fields(options) == {"truncation_strategy": {"type": "last_messages", "last_messages": 5}}
    assert ro.reported(options, {})["truncation_strategy"] == {"type": "last_messages", "last_messages": 5}
    assert "Responses API" in refused(body, "truncation_strategy", engine="responses")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("auto", "truncation_strategy"),
        ({"type": "middle"}, "truncation_strategy.type"),
        ({"type": "last_messages"}, "truncation_strategy.last_messages"),
        ({"type": "last_messages", "last_messages": 0}, "truncation_strategy.last_messages"),
        ({"type": "last_messages", "last_messages": "3"}, "truncation_strategy.last_messages"),
        ({"type": "auto", "last_messages": 3}, "truncation_strategy"),
        ({"type": "auto", "other": 1}, "truncation_strategy"),
    ],
)
def test_bad_truncation_strategies_are_refused(value, named):
    refused({"truncation_strategy": value}, named)


# --- tool_choice, parallel_tool_calls -------------------------------------------------------------------


@pytest.mark.parametrize("word", ["none", "auto", "required"])
def test_tool_choice_words_pass_as_they_are(word):
    options = parse({"tool_choice": word})
    assert ro.responses_fields(options, None)["tool_choice"] == word
    assert ro.assistants_fields(options) == {"tool_choice": word}
    assert ro.reported(options, {})["tool_choice"] == word


def test_a_function_tool_choice_is_not_nested_on_responses():
    choice = {"type": "function", "function": {"name": "lookup"}}
    options = parse({"tool_choice": choice})
    assert ro.responses_fields(options, None)["tool_choice"] == {"type": "function", "name": "lookup"}
    assert ro.assistants_fields(options) == {"tool_choice": choice}
    assert ro.reported(options, {})["tool_choice"] == choice


def test_a_forced_tool_choice_is_not_forced_again_after_tool_outputs():
    for choice in ("required", {"type": "function", "function": {"name": "lookup"}}):
        options = parse({"tool_choice": choice})
        assert "tool_choice" not in ro.responses_fields(options, None, continuation=True)
    assert ro.responses_fields(parse({"tool_choice": "none"}), None, continuation=True)["tool_choice"] == "none"


def test_file_search_tool_choice_needs_the_hosted_tool():
    options = parse({"tool_choice": {"type": "file_search"}}, hosted={"file_search"})
    assert ro.responses_fields(options, None)["tool_choice"] == {"type": "file_search"}
    assert ro.assistants_fields(options) == {"tool_choice": {"type": "file_search"}}
    refused({"tool_choice": {"type": "file_search"}}, "tool_choice")


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("sometimes", "tool_choice"),
        (3, "tool_choice"),
        ({"type": "function", "function": {"name": "unknown"}}, "tool_choice.function.name"),
        ({"type": "function", "name": "lookup"}, "tool_choice"),
        ({"type": "function", "function": {"name": "lookup", "x": 1}}, "tool_choice"),
        ({"type": "code_interpreter"}, "tool_choice"),
        ({"type": "web_search"}, "tool_choice"),
    ],
)
def test_bad_tool_choices_are_refused(value, named):
    refused({"tool_choice": value}, named)


def test_required_tool_choice_needs_a_tool():
    refused({"tool_choice": "required"}, "tool_choice", functions=set())
    assert parse({"tool_choice": "none"}, functions=set()).tool_choice == "none"


@pytest.mark.parametrize("value", [False, True])
def test_parallel_tool_calls_passes_as_it_is(value):
    options = parse({"parallel_tool_calls": value})
    assert ro.responses_fields(options, None)["parallel_tool_calls"] is value
    assert ro.assistants_fields(options) == {"parallel_tool_calls": value}
    assert ro.reported(options, {})["parallel_tool_calls"] is value


@pytest.mark.parametrize("value", ["false", 0, 1, []])
def test_bad_parallel_tool_calls_are_refused(value):
    refused({"parallel_tool_calls": value}, "parallel_tool_calls")


# --- metadata -----------------------------------------------------------------------------------------------


def test_metadata_is_kept_and_reported():
    options = parse({"metadata": {"session": "s-1"}})
    assert ro.reported(options, {"metadata": {}})["metadata"] == {"session": "s-1"}
    assert ro.assistants_fields(options) == {"metadata": {"session": "s-1"}}
    assert "metadata" not in ro.responses_fields(options, None)


@pytest.mark.parametrize(
    "value",
    [
        "x",
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
        {"k": 1},
    ],
)
def test_bad_metadata_is_refused(value):
    refused({"metadata": value}, "metadata")


# --- instructions and model overrides ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [("instructions", "Be rude."), ("model", "gpt-4o-mini")])
def test_overrides_are_refused_unless_the_type_allows_them(name, value):
    message = refused({name: value}, name)
    assert "ASSISTANT_CURATOR_ALLOW_OVERRIDES" in message


def test_allowed_overrides_replace_the_types_values():
    options = parse({"instructions": "Be long.", "model": "gpt-4o-mini", "additional_instructions": "Extra."}, OPEN)
    fields = ro.responses_fields(options, "Type's own.")
    assert fields["instructions"] == "Be long.\n\nExtra."
    assert fields["model"] == "gpt-4o-mini"
    assert ro.assistants_fields(options) == {
        "instructions": "Be long.",
        "model": "gpt-4o-mini",
        "additional_instructions": "Extra.",
    }
    assert ro.reported(options, {"model": "gpt-4o"})["model"] == "gpt-4o-mini"


@pytest.mark.parametrize(("name", "value"), [("model", "gpt 4o"), ("model", 4), ("instructions", ["x"])])
def test_bad_overrides_are_refused(name, value):
    refused({name: value}, name, assistant=OPEN)


# --- what the run shows -----------------------------------------------------------------------------------


def test_the_run_shows_the_applied_values_over_the_engines_constants():
    body = {
        "response_format": {"type": "json_object"},
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "truncation_strategy": {"type": "auto"},
        "max_completion_tokens": 300,
        "metadata": {"a": "b"},
    }
    upstream = {
        "id": "resp_1",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"},
        "response_format": "auto",
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "max_completion_tokens": None,
        "metadata": {},
    }
    run = ro.reported(parse(body, engine="responses"), upstream)
    assert run == {
        "id": "resp_1",
        "status": "incomplete",
        "incomplete_details": {"reason": "max_completion_tokens"},
        "response_format": {"type": "json_object"},
        "tool_choice": "none",
        "parallel_tool_calls": False,
        "truncation_strategy": {"type": "auto", "last_messages": None},
        "max_prompt_tokens": None,
        "max_completion_tokens": 300,
        "metadata": {"a": "b"},
    }
    assert upstream["incomplete_details"] == {"reason": "max_output_tokens"}  # not changed in place


@pytest.mark.parametrize(
    ("upstream", "shown"),
    [
        ("max_output_tokens", "max_completion_tokens"),
        ("max_completion_tokens", "max_completion_tokens"),
        ("content_filter", "content_filter"),
        (None, None),
    ],
)
def test_incomplete_reasons_in_assistants_terms(upstream, shown):
    assert ro.incomplete_reason(upstream) == shown


def test_every_field_the_module_reads_is_listed():
    body = {name: None for name in ro.FIELDS}
    assert parse(body) == ro.RunOptions()


# --- the type's client tools ------------------------------------------------------------------------------

LOOKUP = {
    "type": "function",
    "function": {
        "name": "lookup",
        "description": "Look a word up.",
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]},
    },
}


def settings(**variables):
    env = {"AUTH_MODE": "none", "OPENAI_BASE_URL": "offline", "ASSISTANT_CURATOR_MODEL": "gpt-4o", **variables}
    return load_settings(env)


def test_client_tools_from_a_json_list_or_a_file(tmp_path):
    from_variable = settings(ASSISTANT_CURATOR_CLIENT_TOOLS=json.dumps([LOOKUP])).assistant_types[0]
    path = tmp_path / "tools.json"
    path.write_text(json.dumps([LOOKUP]), encoding="utf-8")
    from_file = settings(ASSISTANT_CURATOR_CLIENT_TOOLS=str(path)).assistant_types[0]
    for assistant in (from_variable, from_file):
        assert [t.declaration() for t in assistant.client_tools] == [
            {
                "name": "lookup",
                "description": "Look a word up.",
                "parameters": LOOKUP["function"]["parameters"],
                "strict": False,
            }
        ]
        assert assistant.client_tools[0].handler is None  # the client runs it
    assert settings().assistant_types[0].client_tools == ()


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("[", "not a JSON list"),
        ("{}", "must be an array"),
        ('{"type": "function"}', "must be an array"),
        ("/nonexistent/tools.json", "cannot read"),
        ('[{"type": "code_interpreter"}]', "only function tools"),
        ('[{"type": "function", "function": {"name": "a b"}}]', "'name'"),
        (json.dumps([LOOKUP, LOOKUP]), "already declared"),
        (json.dumps([{"type": "function", "function": {"name": "current_time"}}]), "already declared"),
    ],
)
def test_bad_client_tools_stop_the_start_naming_the_variable(value, says):
    with pytest.raises(ConfigError) as caught:
        settings(ASSISTANT_CURATOR_CLIENT_TOOLS=value, ASSISTANT_CURATOR_TOOLS="examples.tools:current_time")
    assert str(caught.value).startswith("ASSISTANT_CURATOR_CLIENT_TOOLS: ")
    assert says in str(caught.value)


def test_allow_overrides_setting():
    assert settings().assistant_types[0].allow_overrides == frozenset()
    chosen = settings(ASSISTANT_CURATOR_ALLOW_OVERRIDES="Instructions, model").assistant_types[0]
    assert chosen.allow_overrides == frozenset({"instructions", "model"})
    with pytest.raises(ConfigError, match="^ASSISTANT_CURATOR_ALLOW_OVERRIDES: .*temperature"):
        settings(ASSISTANT_CURATOR_ALLOW_OVERRIDES="instructions,temperature")


TYPED = AssistantType(
    name="curator", model="gpt-4o", client_tools=(Tool(name="lookup"),), tools=(Tool(name="current_time"),)
)


def test_a_runs_client_tools_are_the_types_then_the_bodys():
    body_tool = {"type": "function", "function": {"name": "weather"}}
    assert [t.name for t in ro.run_tools(None, TYPED)] == ["lookup"]
    assert [t.name for t in ro.run_tools([body_tool], TYPED)] == ["lookup", "weather"]


@pytest.mark.parametrize("name", ["lookup", "current_time"])
def test_a_body_tool_may_not_take_a_declared_name(name):
    with pytest.raises(ApiError) as caught:
        ro.run_tools([{"type": "function", "function": {"name": name}}], TYPED)
    assert caught.value.status == 400
    assert f"'{name}' is already declared" in caught.value.message


def test_settings_survive_the_record_as_json():
    body = {
        "additional_messages": [{"role": "user", "content": "x"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "b", "schema": SCHEMA}},
        "tool_choice": {"type": "function", "function": {"name": "lookup"}},
        "truncation_strategy": {"type": "last_messages", "last_messages": 3},
        "metadata": {"a": "b"},
        "max_completion_tokens": 300,
    }
    options = parse(body)
    assert ro.from_record(json.loads(json.dumps(ro.to_record(options)))) == options
    assert ro.from_record(None) == ro.RunOptions()


def test_a_newer_look_carries_the_recorded_settings():
    shown = ro.reported(parse({"tool_choice": "none", "metadata": {"a": "b"}}), {"id": "run_1", "status": "queued"})
    upstream = {
        "id": "resp_2",
        "status": "incomplete",
        "tool_choice": "auto",
        "metadata": {},
        "incomplete_details": {"reason": "max_output_tokens"},
    }
    run = ro.carried(shown, upstream)
    assert run["id"] == "resp_2" and run["status"] == "incomplete"
    assert run["tool_choice"] == "none" and run["metadata"] == {"a": "b"}
    assert run["incomplete_details"] == {"reason": "max_completion_tokens"}
    assert {name: run[name] for name in ro.REPORTED} == {name: shown[name] for name in ro.REPORTED}


def test_the_served_document_leaves_out_what_this_deployment_refuses():
    from app.api.openapi import document_for

    def run_fields(types, engine):
        return document_for(types, engine)["components"]["schemas"]["CreateRunRequest"]["properties"]

    plain = run_fields((CURATOR,), "responses")
    assert "instructions" not in plain and "model" not in plain and "max_prompt_tokens" not in plain
    assert plain["assistant_type"]["enum"] == ["curator"]
    truncation = plain["truncation_strategy"]["anyOf"][1]["properties"]
    assert truncation == {"type": {"const": "auto"}, "last_messages": {"type": "null"}}
    legacy = run_fields((CURATOR, OPEN), "assistants")
    assert {"instructions", "model", "max_prompt_tokens"} <= set(legacy)
    assert legacy["truncation_strategy"]["anyOf"][1]["properties"]["type"] == {"enum": ["auto", "last_messages"]}

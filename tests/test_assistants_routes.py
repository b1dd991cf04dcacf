"""Assistant types as OpenAI Assistant objects, and the vector stores an administrator gives a type."""

from __future__ import annotations

import io

import openai
import pytest

from app.assistant_types import lookup
from app.environment import ConfigError
from app.knowledge import type_vector_store_ids
from app.settings import load_settings
from tests.helpers import TOKENS, Api, ServerThread, upstream_calls

# The SDK marks its Assistants methods deprecated; these tests call them on purpose.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning"),
]
one_engine = pytest.mark.parametrize("engine_name", ["responses"])


@pytest.fixture
def admin_app(make_app, fake):
    fake.config.file_processing_seconds = 0.05
    return make_app(
        ADMIN_USERS="bob",
        ASSISTANT_CURATOR_TOOLS="tests.tool_handlers:add",
        ASSISTANT_CURATOR_DESCRIPTION="Answers about the collection.",
        ASSISTANT_TUTOR_VECTOR_STORE_IDS="vs_configured",
        ASSISTANT_TUTOR_FILE_SEARCH_MAX_RESULTS="8",
    )


def clients(app):
    client = app.test_client()
    return Api(client, TOKENS["alice"], "/v1"), Api(client, TOKENS["bob"], "/v1")


def new_store(api: Api) -> str:
    answer = api.post("/vector_stores", json={"name": "knowledge"})
    assert answer.status_code == 200, answer.json
    return answer.json["id"]


@one_engine
def test_a_type_is_an_assistant_object_built_from_its_settings(admin_app):
    alice, _ = clients(admin_app)
    curator = alice.get("/assistants/curator").json
    assert curator["object"] == "assistant" and curator["id"] == "asst_curator" and curator["name"] == "curator"
    assert curator["model"] == "gpt-4o" and curator["description"] == "Answers about the collection."
    assert curator["instructions"] is None  # hidden unless ASSISTANT_INSTRUCTIONS_VISIBLE
    assert [t["type"] for t in curator["tools"]] == ["function"]
    assert curator["tools"][0]["function"]["name"] == "add"
    assert curator["tool_resources"] == {} and curator["metadata"] == {}
    assert alice.get("/assistants/asst_curator").json == curator  # by its configured ID too

    tutor = alice.get("/assistants/tutor").json
    assert tutor["tools"] == [{"type": "file_search", "file_search": {"max_num_results": 8}}]
    assert tutor["tool_resources"] == {"file_search": {"vector_store_ids": ["vs_configured"]}}
    assert tutor["temperature"] == 0.3

    listed = alice.get("/assistants").json
    assert listed["object"] == "list" and {a["id"] for a in listed["data"]} == {"asst_curator", "asst_tutor"}
    assert [a["id"] for a in alice.get("/assistants?limit=1&order=asc").json["data"]] == ["asst_curator"]
    assert alice.get("/assistants/nobody").status_code == 404
    for prefix in ("/api/openai", "/api/assistants/tutor"):
        assert alice.under(prefix).get("/assistants/curator").json["id"] == "asst_curator"


@one_engine
def test_instructions_are_shown_when_the_setting_allows(make_app):
    alice, _ = clients(make_app(ASSISTANT_INSTRUCTIONS_VISIBLE="true"))
    assert alice.get("/assistants/curator").json["instructions"] == "You are a curator. Be brief."


@one_engine
def test_an_admin_gives_a_type_vector_stores_kept_on_top_of_its_settings(admin_app, fake):
    alice, bob = clients(admin_app)
    store_id = new_store(bob)
    body = {"tool_resources": {"file_search": {"vector_store_ids": [store_id]}}}
    updated = bob.post("/assistants/curator", json=body)
    assert updated.status_code == 200, updated.json
    assert updated.json["tool_resources"] == {"file_search": {"vector_store_ids": [store_id]}}
    assert {"type": "file_search"} in updated.json["tools"]
    assert alice.get("/assistants/curator").json["tool_resources"] == updated.json["tool_resources"]

    services = admin_app.extensions["services"]
    types = services.settings.assistant_types
    tutor, curator = lookup(types, "tutor"), lookup(types, "curator")
    assert type_vector_store_ids(services, curator) == [store_id]
    bob.post("/assistants/tutor", json=body)
    assert type_vector_store_ids(services, tutor) == ["vs_configured", store_id]

    cleared = bob.post("/assistants/curator", json={"tool_resources": {"file_search": {"vector_store_ids": []}}})
    assert cleared.json["tool_resources"] == {} and type_vector_store_ids(services, curator) == []

    bob.delete(f"/vector_stores/{store_id}")  # a deleted store leaves the types that named it
    assert type_vector_store_ids(services, tutor) == ["vs_configured"]


@one_engine
def test_a_non_admin_gets_a_403_and_nothing_changes(admin_app, fake):
    alice, _ = clients(admin_app)
    store_id = new_store(alice)
    before = upstream_calls(fake)
    answer = alice.post(
        "/assistants/curator", json={"tool_resources": {"file_search": {"vector_store_ids": [store_id]}}}
    )
    assert answer.status_code == 403
    assert answer.json["error"]["message"] == "This needs an administrator (ADMIN_USERS)."
    assert upstream_calls(fake) == before
    assert alice.get("/assistants/curator").json["tool_resources"] == {}


@one_engine
@pytest.mark.parametrize(
    "body, message",
    [
        ({"name": "renamed"}, "not name"),
        ({"instructions": "x", "tool_resources": {}}, "not instructions"),
        ({"tool_resources": {"code_interpreter": {"file_ids": []}}}, "Only 'tool_resources.file_search"),
        ({"tool_resources": {"file_search": {"vector_stores": []}}}, "takes only 'vector_store_ids'"),
        ({"tool_resources": {"file_search": {"vector_store_ids": "vs_1"}}}, "must be a list"),
        ({"tool_resources": {"file_search": {"vector_store_ids": ["vs_1", "vs_2", "vs_3"]}}}, "at most 2"),
    ],
)
def test_an_update_of_anything_else_is_a_clear_400(admin_app, fake, body, message):
    _, bob = clients(admin_app)
    answer = bob.post("/assistants/curator", json=body)
    assert answer.status_code == 400 and message in answer.json["error"]["message"]
    assert upstream_calls(fake) == 0


@one_engine
def test_an_admin_cannot_name_another_users_store_or_an_unknown_one(admin_app, fake):
    alice, bob = clients(admin_app)
    alice_store = new_store(alice)
    for store_id in (alice_store, "vs_unknown"):
        answer = bob.post(
            "/assistants/curator", json={"tool_resources": {"file_search": {"vector_store_ids": [store_id]}}}
        )
        assert answer.status_code == 404 and store_id in answer.json["error"]["message"]
    assert upstream_calls(fake, "GET /v1/vector_stores/{store_id}") == 1  # only the unknown one was asked about
    assert alice.get("/assistants/curator").json["tool_resources"] == {}


@one_engine
def test_creating_or_deleting_an_assistant_is_refused(admin_app):
    _, bob = clients(admin_app)
    for answer in (bob.post("/assistants", json={"model": "gpt-4o"}), bob.delete("/assistants/curator")):
        assert answer.status_code == 405 and "configured by the operator" in answer.json["error"]["message"]
    legacy = Api(admin_app.test_client(), TOKENS["bob"]).post("/assistants", json={})
    assert legacy.status_code == 405 and "configured by the operator" in legacy.json["error"]


def test_type_settings_are_checked(base_env):
    settings = load_settings({**base_env, "ASSISTANT_TUTOR_VECTOR_STORE_IDS": "vs_a, vs_b,vs_a"})
    assert lookup(settings.assistant_types, "tutor").vector_store_ids == ("vs_a", "vs_b")
    assert load_settings({**base_env, "ADMIN_USERS": " bob, carol ,"}).admin_users == {"bob", "carol"}
    assert load_settings(base_env).admin_users == frozenset()
    assert load_settings(base_env).file_max_bytes == 20 * 1024 * 1024
    for variable, value, words in (
        ("ASSISTANT_TUTOR_VECTOR_STORE_IDS", "vs_a,vs_b,vs_c", "at most 2"),
        ("ASSISTANT_TUTOR_VECTOR_STORE_IDS", "vs a", "not a vector store ID"),
        ("ASSISTANT_TUTOR_FILE_SEARCH_MAX_RESULTS", "51", "outside"),
        ("FILE_MAX_BYTES", "0", "FILE_MAX_BYTES"),
    ):
        with pytest.raises(ConfigError, match=words):
            load_settings({**base_env, variable: value})


@pytest.mark.parametrize("engine_name", ["responses", "assistants"])
def test_the_sdk_retrieves_and_an_admin_updates_as_the_sample_frontend_does(make_app, fake, engine_name):
    fake.config.file_processing_seconds = 0.05
    server = ServerThread(make_app(ADMIN_USERS="bob"))
    try:
        with openai.OpenAI(api_key=TOKENS["bob"], base_url=f"{server.url}/v1", max_retries=0) as sdk:
            assistant = sdk.beta.assistants.retrieve("curator")
            assert assistant.id == "asst_curator" and assistant.tools == []
            store = sdk.vector_stores.create(name="Sample knowledge")
            sdk.vector_stores.files.upload_and_poll(
                vector_store_id=store.id,
                file=("foods.txt", io.BytesIO(b"Pizza is Travis's favorite.")),
                poll_interval_ms=20,
            )
            updated = sdk.beta.assistants.update(
                assistant.id, tool_resources={"file_search": {"vector_store_ids": [store.id]}}
            )
            assert updated.tool_resources.file_search.vector_store_ids == [store.id]
            assert [t.type for t in sdk.beta.assistants.retrieve("curator").tools] == ["file_search"]
            assert {a.id for a in sdk.beta.assistants.list()} == {"asst_curator", "asst_tutor"}
            with pytest.raises(openai.APIStatusError) as refused:
                sdk.beta.assistants.create(model="gpt-4o")
            assert refused.value.status_code == 405
        with openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{server.url}/v1", max_retries=0) as alice:
            with pytest.raises(openai.PermissionDeniedError, match="ADMIN_USERS"):
                alice.beta.assistants.update("curator", tool_resources={"file_search": {"vector_store_ids": []}})
            assert alice.beta.assistants.retrieve("curator").tool_resources.file_search.vector_store_ids == [store.id]
    finally:
        server.stop()

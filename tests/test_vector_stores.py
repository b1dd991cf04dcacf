"""Vector stores a user manages through the backend: owned like files, checked before the upstream."""

from __future__ import annotations

import io

import openai
import pytest

from tests.helpers import TOKENS, Api, upstream_calls

KNOWLEDGE = b"Travis's favorite food is pizza.\n\nFilip's favorite food is cake.\n"
one_engine = pytest.mark.parametrize("engine_name", ["responses"])


@pytest.fixture
def quick(fake):
    """Files in a store finish processing quickly."""
    fake.config.file_processing_seconds = 0.05
    return fake


def upload(api, content=KNOWLEDGE, filename="foods.txt"):
    answer = api.post("/files", data={"purpose": "assistants", "file": (io.BytesIO(content), filename)})
    assert answer.status_code == 200, answer.json
    return answer.json["id"]


@one_engine
def test_a_store_is_created_with_the_owners_files_and_seen_by_the_owner_only(api, quick):
    file_id = upload(api)
    answer = api.post("/vector_stores", json={"name": "foods", "file_ids": [file_id], "metadata": {"k": "v"}})
    assert answer.status_code == 200, answer.json
    store = answer.json
    assert store["object"] == "vector_store" and store["name"] == "foods"
    assert file_id in quick.vector_stores[store["id"]].files  # the upstream holds the file in it

    assert [s["id"] for s in api.get("/vector_stores").json["data"]] == [store["id"]]
    assert api.get(f"/vector_stores/{store['id']}").json["file_counts"]["total"] == 1
    listed = api.get(f"/vector_stores/{store['id']}/files").json
    assert [f["id"] for f in listed["data"]] == [file_id]

    bob = api.as_user("bob")
    before = upstream_calls(quick)
    assert bob.get("/vector_stores").json["data"] == []
    for call, path in (
        (bob.get, f"/vector_stores/{store['id']}"),
        (bob.delete, f"/vector_stores/{store['id']}"),
        (bob.get, f"/vector_stores/{store['id']}/files"),
        (bob.get, f"/vector_stores/{store['id']}/files/{file_id}"),
        (bob.delete, f"/vector_stores/{store['id']}/files/{file_id}"),
    ):
        answer = call(path)
        assert answer.status_code == 404 and store["id"] in answer.json["error"], path
    assert bob.post(f"/vector_stores/{store['id']}/files", json={"file_id": file_id}).status_code == 404
    assert upstream_calls(quick) == before  # nothing of bob's reached the upstream
    assert store["id"] in quick.vector_stores


@one_engine
def test_another_users_file_is_a_404_before_anything_is_created(api, quick):
    alice_file = upload(api)
    bob = api.as_user("bob")
    bob_file = upload(bob, b"bob's notes")
    answer = bob.post("/vector_stores", json={"file_ids": [bob_file, alice_file]})
    assert answer.status_code == 404 and alice_file in answer.json["error"]
    assert upstream_calls(quick, "POST /v1/vector_stores") == 0
    bob_store = bob.post("/vector_stores", json={}).json["id"]
    answer = bob.post(f"/vector_stores/{bob_store}/files", json={"file_id": alice_file})
    assert answer.status_code == 404 and alice_file in answer.json["error"]
    assert upstream_calls(quick, "POST /v1/vector_stores") == 1  # only bob's empty store
    assert upstream_calls(quick, "POST /v1/vector_stores/{store_id}/files") == 0
    assert len(quick.vector_stores) == 1


@one_engine
@pytest.mark.parametrize(
    "body, message",
    [
        ({"file_ids": ["file-x"] * 501}, "at most 500"),
        ({"file_ids": "file-x"}, "'file_ids' must be a list"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "at most 16"),
        ({"metadata": {"k": 1}}, "'metadata'"),
        ({"name": 5}, "'name'"),
        ({"expires_after": {"anchor": "last_active_at", "days": 366}}, "'expires_after'"),
        ({"expires_after": {"anchor": "created_at", "days": 3}}, "'expires_after'"),
        ({"chunking_strategy": {"type": "auto"}}, "only with 'file_ids'"),
        ({"file_ids": ["file-x"], "chunking_strategy": {"type": "static", "static": {}}}, "whole numbers"),
        (
            {
                "file_ids": ["file-x"],
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0},
                },
            },
            "100 to 4096",
        ),
        (
            {
                "file_ids": ["file-x"],
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 400, "chunk_overlap_tokens": 300},
                },
            },
            "half",
        ),
        ({"tools": []}, "Unknown field"),
    ],
)
def test_a_bad_store_is_a_400_naming_the_limit_before_the_upstream(api, quick, body, message):
    answer = api.post("/vector_stores", json=body)
    assert answer.status_code == 400 and message in answer.json["error"]
    assert upstream_calls(quick) == 0


@one_engine
@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "'file_id' is required"),
        ({"file_id": "FILE"}, None),
        ({"file_id": "FILE", "attributes": {f"k{i}": i for i in range(17)}}, "at most 16"),
        ({"file_id": "FILE", "attributes": {"k": [1]}}, "'attributes'"),
        ({"file_id": "FILE", "chunking_strategy": {"type": "fancy"}}, "'chunking_strategy'"),
    ],
)
def test_adding_a_file_is_checked_before_the_upstream(api, quick, body, message):
    file_id = upload(api)
    store_id = api.post("/vector_stores", json={}).json["id"]
    body = {k: (file_id if v == "FILE" else v) for k, v in body.items()}
    before = upstream_calls(quick)
    answer = api.post(f"/vector_stores/{store_id}/files", json=body)
    if message is None:
        assert answer.status_code == 200 and answer.json["vector_store_id"] == store_id
        return
    assert answer.status_code == 400 and message in answer.json["error"]
    assert upstream_calls(quick) == before


@one_engine
def test_store_files_are_listed_retrieved_and_removed_and_the_store_deleted(api, quick):
    first, second = upload(api), upload(api, b"The weather in Paris is mild.", "paris.txt")
    store_id = api.post("/vector_stores", json={"file_ids": [first]}).json["id"]
    added = api.post(f"/vector_stores/{store_id}/files", json={"file_id": second, "attributes": {"city": "Paris"}})
    assert added.status_code == 200 and added.json["attributes"] == {"city": "Paris"}
    assert api.get(f"/vector_stores/{store_id}/files/{second}").json["id"] == second
    page = api.get(f"/vector_stores/{store_id}/files?limit=1&order=asc").json
    assert len(page["data"]) == 1 and page["has_more"] is True
    assert api.get(f"/vector_stores/{store_id}/files?filter=bogus").status_code == 400

    removed = api.delete(f"/vector_stores/{store_id}/files/{second}").json
    assert removed == {"id": second, "object": "vector_store.file.deleted", "deleted": True}
    assert second not in quick.vector_stores[store_id].files and second in quick.files  # the file stays

    deleted = api.delete(f"/vector_stores/{store_id}").json
    assert deleted == {"id": store_id, "object": "vector_store.deleted", "deleted": True}
    assert store_id not in quick.vector_stores
    assert api.get(f"/vector_stores/{store_id}").status_code == 404
    assert api.get("/vector_stores").json["data"] == []


@one_engine
def test_the_store_list_pages_with_cursors(api, quick):
    ids = [api.post("/vector_stores", json={"name": f"s{i}"}).json["id"] for i in range(3)]
    page = api.get("/vector_stores?limit=2").json
    assert [s["id"] for s in page["data"]] == [ids[2], ids[1]] and page["has_more"] is True
    assert [s["id"] for s in api.get(f"/vector_stores?after={ids[1]}").json["data"]] == [ids[0]]
    assert [s["id"] for s in api.get(f"/vector_stores?before={ids[0]}&limit=1").json["data"]] == [ids[1]]
    assert [s["id"] for s in api.get("/vector_stores?order=asc").json["data"]] == ids


@pytest.mark.parametrize("engine_name", ["responses", "assistants"])
def test_the_sdk_builds_a_store_as_a_frontend_would(live_server, quick, engine_name):
    with openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1", max_retries=0) as sdk:
        store = sdk.vector_stores.create(name="knowledge")
        assert store.id in quick.vector_stores
        uploaded = sdk.vector_stores.files.upload_and_poll(
            vector_store_id=store.id, file=("foods.txt", KNOWLEDGE), poll_interval_ms=20
        )
        assert uploaded.status == "completed" and uploaded.vector_store_id == store.id
        assert uploaded.id in quick.files
        other = sdk.files.create(file=("paris.txt", b"The weather in Paris is mild."), purpose="assistants")
        added = sdk.vector_stores.files.create_and_poll(vector_store_id=store.id, file_id=other.id, poll_interval_ms=20)
        assert added.status == "completed"
        assert {f.id for f in sdk.vector_stores.files.list(store.id)} == {uploaded.id, other.id}
        assert sdk.vector_stores.retrieve(store.id).file_counts.completed == 2
        assert [s.id for s in sdk.vector_stores.list()] == [store.id]
    with openai.OpenAI(api_key=TOKENS["bob"], base_url=f"{live_server.url}/v1", max_retries=0) as bob:
        before = upstream_calls(quick)
        with pytest.raises(openai.NotFoundError):
            bob.vector_stores.retrieve(store.id)
        with pytest.raises(openai.NotFoundError):
            bob.vector_stores.create(file_ids=[other.id])
        assert upstream_calls(quick) == before
    with openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1", max_retries=0) as sdk:
        assert sdk.vector_stores.delete(store.id).deleted is True


@one_engine
def test_files_stores_and_a_types_stores_are_kept_on_postgresql(make_app, postgres_url, quick):
    app = make_app(DATABASE_URL=postgres_url, ADMIN_USERS="alice")
    try:
        kept_on(app)
    finally:
        app.extensions["services"].records.db.dispose()  # a connection left to the GC is a ResourceWarning


def kept_on(app):
    api = Api(app.test_client(), TOKENS["alice"])
    file_id = upload(api)
    store_id = api.post("/vector_stores", json={"file_ids": [file_id]}).json["id"]
    assert [f["id"] for f in api.get("/files").json["data"]] == [file_id]
    assert [s["id"] for s in api.get("/vector_stores").json["data"]] == [store_id]
    assert api.as_user("bob").get(f"/vector_stores/{store_id}").status_code == 404
    body = {"tool_resources": {"file_search": {"vector_store_ids": [store_id]}}}
    resources = api.post("/assistants/curator", json=body).json["tool_resources"]
    assert resources["file_search"]["vector_store_ids"] == [store_id]
    assert api.delete(f"/vector_stores/{store_id}").json["deleted"] is True
    assert api.get("/assistants/curator").json["tool_resources"] == {}
    assert api.delete(f"/files/{file_id}").json["deleted"] is True
    assert api.get("/files").json["data"] == []

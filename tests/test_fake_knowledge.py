"""The fake upstream's Files API, vector stores, file_search and citations (raw HTTP and the openai SDK)."""

import json
import time

import httpx2
import openai
import pytest
from openai.types.file_object import FileObject
from openai.types.vector_store import VectorStore
from openai.types.vector_stores.vector_store_file import VectorStoreFile

from fake_openai import create_fake_app

pytestmark = pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")

BETA = {"OpenAI-Beta": "assistants=v2"}
FOODS = (
    "Travis's favorite food is pizza.\n\n"
    "Filip's favorite food is cake.\n\n"
    "The weather in Paris is mild in spring and the river is calm."
)


@pytest.fixture
def app():
    app = create_fake_app(default_duration=0.1)
    app.fake.config.file_processing_seconds = 0.05
    return app


@pytest.fixture
def fake(app):
    return app.fake


@pytest.fixture
def client(app):
    http = httpx2.Client(transport=httpx2.WSGITransport(app=app))
    with openai.OpenAI(api_key="sk-test", base_url="http://fake/v1", http_client=http, max_retries=0) as sdk:
        yield sdk


@pytest.fixture
def raw(app):
    with httpx2.Client(
        transport=httpx2.WSGITransport(app=app),
        base_url="http://fake",
        headers={"Authorization": "Bearer sk-test", **BETA},
    ) as http:
        yield http


def upload(raw, content, filename="notes.txt", purpose="assistants"):
    answer = raw.post("/v1/files", files={"file": (filename, content)}, data={"purpose": purpose})
    assert answer.status_code == 200, answer.text
    return answer.json()


def error_of(answer, status):
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def wait_store(raw, store_id, timeout=3.0):
    deadline = time.time() + timeout
    while True:
        store = raw.get(f"/v1/vector_stores/{store_id}").json()
        if store["status"] != "in_progress" or time.time() > deadline:
            return store
        time.sleep(0.01)


# --- Files -----------------------------------------------------------------------------------


def test_the_sdk_uploads_a_file_already_processed(client):
    created = client.files.create(file=("foods.txt", FOODS.encode()), purpose="assistants")
    assert isinstance(created, FileObject)
    assert created.id.startswith("file-") and len(created.id) == 27
    assert (created.filename, created.purpose, created.bytes) == ("foods.txt", "assistants", len(FOODS.encode()))
    assert created.status == "processed" and created.expires_at is None and created.status_details is None
    assert client.files.retrieve(created.id) == created


def test_upload_reply_has_the_fields_in_openai_order(raw):
    created = upload(raw, b"hello", purpose="user_data")
    assert list(created) == [
        "object",
        "id",
        "purpose",
        "filename",
        "bytes",
        "created_at",
        "expires_at",
        "status",
        "status_details",
    ]
    assert created["object"] == "file" and created["bytes"] == 5


@pytest.mark.parametrize(
    ("files", "data", "param", "message"),
    [
        ({}, {"purpose": "assistants"}, "file", "Missing required parameter: 'file'."),
        ({"file": ("a.txt", b"x")}, {}, "purpose", "Missing required parameter: 'purpose'."),
        (
            {"file": ("a.txt", b"x")},
            {"purpose": "answers"},
            "purpose",
            "'answers' is not one of ['assistants', 'batch', 'fine-tune', 'vision', 'user_data', 'evals'] - 'purpose'",
        ),
    ],
)
def test_a_bad_upload_is_a_400_and_stores_nothing(raw, fake, files, data, param, message):
    error = error_of(raw.post("/v1/files", files=files or None, data=data), 400)
    assert (error["type"], error["param"], error["message"]) == ("invalid_request_error", param, message)
    assert raw.get("/v1/files").json()["data"] == [] and fake.files == {}


def test_a_file_field_without_a_filename_and_unknown_fields_are_refused(raw):
    error = error_of(raw.post("/v1/files", data={"purpose": "assistants", "file": "plain text"}), 400)
    assert error["param"] == "file"
    error = error_of(
        raw.post("/v1/files", files={"file": ("a.txt", b"x")}, data={"purpose": "assistants", "colour": "red"}), 400
    )
    assert error["message"] == "Unrecognized request argument supplied: colour"


def test_batch_files_expire_after_30_days_and_expires_after_is_honoured(raw):
    batch = upload(raw, b"{}", "in.jsonl", "batch")
    assert batch["expires_at"] == batch["created_at"] + 30 * 86400
    answer = raw.post(
        "/v1/files",
        files={"file": ("a.txt", b"x")},
        data={"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "3600"},
    )
    assert answer.json()["expires_at"] == answer.json()["created_at"] + 3600
    bad = raw.post(
        "/v1/files",
        files={"file": ("a.txt", b"x")},
        data={"purpose": "assistants", "expires_after[anchor]": "created_at", "expires_after[seconds]": "60"},
    )
    assert error_of(bad, 400)["param"] == "expires_after.seconds"


def test_list_files_filters_by_purpose_and_pages_without_before(client, raw):
    ids = [upload(raw, b"x", f"{n}.txt", "assistants" if n % 2 else "vision")["id"] for n in range(5)]
    listed = client.files.list()
    assert [f.id for f in listed.data] == ids[::-1] and listed.has_more is False
    assert [f.id for f in client.files.list(purpose="vision").data] == [ids[4], ids[2], ids[0]]
    page = raw.get("/v1/files", params={"order": "asc", "limit": 2, "after": ids[0]}).json()
    assert [f["id"] for f in page["data"]] == ids[1:3] and page["has_more"] is True
    assert error_of(raw.get("/v1/files", params={"limit": 10001}), 400)["code"] == "integer_above_max_value"
    assert len(raw.get("/v1/files", params={"limit": 10000}).json()["data"]) == 5


def test_content_downloads_only_purposes_openai_hands_back(raw, client):
    vision = upload(raw, b"\x89PNG bytes", "a.png", "vision")
    assert raw.get(f"/v1/files/{vision['id']}/content").content == b"\x89PNG bytes"
    for purpose in ("assistants", "user_data"):
        stored = upload(raw, b"secret", "a.txt", purpose)
        error = error_of(raw.get(f"/v1/files/{stored['id']}/content"), 400)
        assert error == {
            "message": f"Not allowed to download files of purpose: {purpose}",
            "type": "invalid_request_error",
            "param": None,
            "code": None,
        }
    with pytest.raises(openai.BadRequestError):
        client.files.content(stored["id"])


def test_unknown_file_is_a_404_and_delete_answers_deleted(client, raw):
    error = error_of(raw.get("/v1/files/file-nope"), 404)
    assert error["message"] == "No such File object: file-nope"
    stored = upload(raw, b"x")
    deleted = client.files.delete(stored["id"])
    assert (deleted.id, deleted.object, deleted.deleted) == (stored["id"], "file", True)
    error_of(raw.delete(f"/v1/files/{stored['id']}"), 404)
    error_of(raw.get(f"/v1/files/{stored['id']}/content"), 404)


def test_deleting_a_file_removes_it_from_every_vector_store(raw):
    stored = upload(raw, FOODS.encode())
    stores = [raw.post("/v1/vector_stores", json={"file_ids": [stored["id"]]}).json() for _ in range(2)]
    for store in stores:
        assert wait_store(raw, store["id"])["file_counts"]["completed"] == 1
    raw.delete(f"/v1/files/{stored['id']}")
    for store in stores:
        again = raw.get(f"/v1/vector_stores/{store['id']}").json()
        assert again["file_counts"]["total"] == 0 and again["usage_bytes"] == 0
        error_of(raw.get(f"/v1/vector_stores/{store['id']}/files/{stored['id']}"), 404)


# --- Vector stores ---------------------------------------------------------------------------


def test_a_store_indexes_its_files_over_time(raw, fake):
    fake.config.file_processing_seconds = 0.5
    stored = upload(raw, FOODS.encode(), "favorite_foods.txt")
    created = raw.post("/v1/vector_stores", json={"name": "foods", "file_ids": [stored["id"]]}).json()
    VectorStore.model_validate(created)
    assert created["id"].startswith("vs_") and created["object"] == "vector_store"
    assert created["status"] == "in_progress" and created["usage_bytes"] == 0
    assert created["file_counts"] == {"in_progress": 1, "completed": 0, "failed": 0, "cancelled": 0, "total": 1}
    assert (created["name"], created["description"], created["expires_after"], created["metadata"]) == (
        "foods",
        None,
        None,
        {},
    )
    early = raw.get(f"/v1/vector_stores/{created['id']}/files/{stored['id']}").json()
    VectorStoreFile.model_validate(early)
    assert early["status"] == "in_progress" and early["last_error"] is None and early["usage_bytes"] == 0
    assert early["chunking_strategy"] == {
        "type": "static",
        "static": {"max_chunk_size_tokens": 800, "chunk_overlap_tokens": 400},
    }
    done = wait_store(raw, created["id"])
    assert done["status"] == "completed" and done["file_counts"]["completed"] == 1
    assert done["usage_bytes"] == len(FOODS.encode())
    late = raw.get(f"/v1/vector_stores/{created['id']}/files/{stored['id']}").json()
    assert late["status"] == "completed" and late["usage_bytes"] == len(FOODS.encode())


def test_the_sdk_create_and_poll_returns_a_completed_file(client):
    stored = client.files.create(file=("foods.txt", FOODS.encode()), purpose="assistants")
    store = client.vector_stores.create(name="knowledge")
    assert store.status == "completed" and store.file_counts.total == 0
    done = client.vector_stores.files.create_and_poll(
        file_id=stored.id, vector_store_id=store.id, poll_interval_ms=20, attributes={"topic": "food"}
    )
    assert done.status == "completed" and done.id == stored.id and done.vector_store_id == store.id
    assert done.attributes == {"topic": "food"}
    assert client.vector_stores.retrieve(store.id).file_counts.completed == 1


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"", "invalid_file"),
        (b"  \n\n ", "invalid_file"),
        (b"a manual [fake unsupported] with words", "unsupported_file"),
        (b"\xff\xfe\x00binary", "unsupported_file"),
    ],
)
def test_a_file_that_cannot_be_processed_ends_failed(client, raw, content, code):
    stored = upload(raw, content)
    store = client.vector_stores.create()
    done = client.vector_stores.files.create_and_poll(
        file_id=stored["id"], vector_store_id=store.id, poll_interval_ms=20
    )
    assert done.status == "failed" and done.last_error.code == code and done.last_error.message
    counts = client.vector_stores.retrieve(store.id).file_counts
    assert (counts.failed, counts.completed, counts.in_progress) == (1, 0, 0)
    assert client.vector_stores.retrieve(store.id).status == "completed"


def test_a_processing_directive_slows_one_file(raw):
    slow = upload(raw, b"slow words here [fake processing=1.5]")
    quick = upload(raw, b"quick words here")
    store = raw.post("/v1/vector_stores", json={"file_ids": [slow["id"], quick["id"]]}).json()
    time.sleep(0.15)
    statuses = {f["id"]: f["status"] for f in raw.get(f"/v1/vector_stores/{store['id']}/files").json()["data"]}
    assert statuses == {slow["id"]: "in_progress", quick["id"]: "completed"}
    listed = raw.get(f"/v1/vector_stores/{store['id']}/files", params={"filter": "in_progress"}).json()
    assert [f["id"] for f in listed["data"]] == [slow["id"]]
    assert wait_store(raw, store["id"])["file_counts"]["completed"] == 2


def test_file_processing_knob_is_set_through_the_control_api(raw, fake):
    answer = raw.post("/_fake/config", json={"file_processing_seconds": 1.5})
    assert answer.json()["file_processing_seconds"] == 1.5 and fake.config.file_processing_seconds == 1.5
    assert raw.post("/_fake/config", json={"file_processing_seconds": -1}).status_code == 400
    raw.post("/_fake/reset")
    assert raw.get("/_fake/config").json()["file_processing_seconds"] == 0.3


def test_store_validation_creates_nothing(raw, fake):
    stored = upload(raw, b"x")
    cases = [
        ({"file_ids": ["file-missing"]}, 404),
        ({"file_ids": "file-x"}, 400),
        ({"file_ids": [stored["id"]] * 501}, 400),
        (
            {
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 50, "chunk_overlap_tokens": 0},
                }
            },
            400,
        ),
        (
            {
                "file_ids": [stored["id"]],
                "chunking_strategy": {
                    "type": "static",
                    "static": {"max_chunk_size_tokens": 200, "chunk_overlap_tokens": 150},
                },
            },
            400,
        ),
        ({"expires_after": {"anchor": "created_at", "days": 2}}, 400),
        ({"colour": "red"}, 400),
    ]
    for body, status in cases:
        error_of(raw.post("/v1/vector_stores", json=body), status)
    assert fake.vector_stores == {}
    error_of(raw.post("/v1/vector_stores/vs_nope/files", json={"file_id": stored["id"]}), 404)
    store = raw.post("/v1/vector_stores", json={}).json()
    assert error_of(raw.post(f"/v1/vector_stores/{store['id']}/files", json={}), 400)["param"] == "file_id"
    error_of(raw.post(f"/v1/vector_stores/{store['id']}/files", json={"file_id": "file-nope"}), 404)
    many = {f"k{n}": n for n in range(17)}
    body = {"file_id": stored["id"], "attributes": many}
    error_of(raw.post(f"/v1/vector_stores/{store['id']}/files", json=body), 400)
    assert raw.get(f"/v1/vector_stores/{store['id']}").json()["file_counts"]["total"] == 0


def test_stores_list_update_expire_and_delete(client, raw, fake):
    first = client.vector_stores.create(name="one")
    second = client.vector_stores.create(name="two", metadata={"team": "a"})
    assert [s.id for s in client.vector_stores.list().data] == [second.id, first.id]
    assert [s.id for s in client.vector_stores.list(order="asc", after=first.id).data] == [second.id]
    renamed = client.vector_stores.update(first.id, name="uno", expires_after={"anchor": "last_active_at", "days": 1})
    assert renamed.name == "uno" and renamed.expires_at == renamed.last_active_at + 86400
    fake.clock = lambda: time.time() + 2 * 86400
    assert client.vector_stores.retrieve(first.id).status == "expired"
    deleted = client.vector_stores.delete(first.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (first.id, "vector_store.deleted", True)
    error = error_of(raw.get(f"/v1/vector_stores/{first.id}"), 404)
    assert error["message"] == f"No vector store found with id '{first.id}'."


def test_store_files_list_and_delete_keep_the_file(client, raw):
    ids = [upload(raw, f"text number {n}".encode())["id"] for n in range(3)]
    store = client.vector_stores.create(file_ids=ids)
    again = client.vector_stores.files.create(vector_store_id=store.id, file_id=ids[0])
    assert again.id == ids[0] and client.vector_stores.retrieve(store.id).file_counts.total == 3
    page = client.vector_stores.files.list(store.id, order="asc", limit=2)
    assert [f.id for f in page.data] == ids[:2] and page.has_more is True
    before = raw.get(f"/v1/vector_stores/{store.id}/files", params={"order": "asc", "before": ids[2]}).json()
    assert [f["id"] for f in before["data"]] == ids[:2]
    deleted = client.vector_stores.files.delete(ids[1], vector_store_id=store.id)
    assert (deleted.id, deleted.object, deleted.deleted) == (ids[1], "vector_store.file.deleted", True)
    assert client.files.retrieve(ids[1]).id == ids[1]
    error_of(raw.get(f"/v1/vector_stores/{store.id}/files/{ids[1]}"), 404)
    assert error_of(raw.get(f"/v1/vector_stores/{store.id}/files", params={"filter": "done"}), 400)["code"] == (
        "invalid_value"
    )


# --- Vector store search ---------------------------------------------------------------------


def ready_store(client, *contents, **store_args):
    ids = [
        client.files.create(file=(f"doc{n}.txt", c.encode()), purpose="assistants").id for n, c in enumerate(contents)
    ]
    store = client.vector_stores.create(file_ids=ids, **store_args)
    for file_id in ids:
        client.vector_stores.files.poll(file_id, vector_store_id=store.id, poll_interval_ms=20)
    return store, ids


def test_search_ranks_the_matching_paragraph_first(client):
    store, (file_id,) = ready_store(client, FOODS)
    page = client.vector_stores.search(store.id, query="What is Travis's favorite food?")
    assert page.search_query == ["What is Travis's favorite food?"]
    texts = [hit.content[0].text for hit in page.data]
    assert texts[0] == "Travis's favorite food is pizza."
    assert "Paris" not in " ".join(texts)
    scores = [hit.score for hit in page.data]
    assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
    assert page.data[0].score > page.data[1].score
    assert page.data[0].file_id == file_id and page.data[0].filename == "doc0.txt"


def test_search_without_a_shared_word_finds_nothing_and_thresholds_cut(client, raw):
    store, _ = ready_store(client, FOODS)
    assert client.vector_stores.search(store.id, query="quantum chromodynamics").data == []
    all_hits = client.vector_stores.search(store.id, query="favorite food").data
    assert len(all_hits) == 2
    top = all_hits[0].score
    kept = client.vector_stores.search(store.id, query="favorite food", ranking_options={"score_threshold": top})
    assert [h.score for h in kept.data] == [h.score for h in all_hits if h.score >= top]
    capped = client.vector_stores.search(store.id, query=["pizza", "cake"], max_num_results=1)
    assert len(capped.data) == 1 and capped.search_query == ["pizza", "cake"]
    assert error_of(raw.post(f"/v1/vector_stores/{store.id}/search", json={}), 400)["param"] == "query"
    body = {"query": "x", "max_num_results": 51}
    assert error_of(raw.post(f"/v1/vector_stores/{store.id}/search", json=body), 400)["param"] == "max_num_results"


def test_search_skips_files_still_processing_or_failed(client, raw, fake):
    store, _ = ready_store(client, "pizza is round")
    fake.config.file_processing_seconds = 5
    slow = upload(raw, b"pizza with olives")
    broken = upload(raw, b"pizza [fake unsupported]")
    for stored in (slow, broken):
        client.vector_stores.files.create(vector_store_id=store.id, file_id=stored["id"])
    hits = client.vector_stores.search(store.id, query="pizza").data
    assert [h.content[0].text for h in hits] == ["pizza is round"]


def test_search_filters_on_attributes(client, raw):
    store = client.vector_stores.create()
    for topic, text in (("food", "pizza recipes"), ("travel", "pizza in Naples")):
        stored = upload(raw, text.encode())
        client.vector_stores.files.create_and_poll(
            file_id=stored["id"], vector_store_id=store.id, attributes={"topic": topic}, poll_interval_ms=20
        )
    hits = client.vector_stores.search(
        store.id, query="pizza", filters={"type": "eq", "key": "topic", "value": "travel"}
    )
    assert [h.content[0].text for h in hits.data] == ["pizza in Naples"]
    compound = {
        "type": "or",
        "filters": [
            {"type": "eq", "key": "topic", "value": "food"},
            {"type": "in", "key": "topic", "value": ["travel"]},
        ],
    }
    assert len(client.vector_stores.search(store.id, query="pizza", filters=compound).data) == 2
    bad = raw.post(f"/v1/vector_stores/{store.id}/search", json={"query": "pizza", "filters": {"type": "like"}})
    assert error_of(bad, 400)["param"] == "filters.type"


def test_static_chunking_cuts_word_windows(client):
    words = " ".join("zebra" if n == 220 else f"w{n}" for n in range(260))
    strategy = {"type": "static", "static": {"max_chunk_size_tokens": 100, "chunk_overlap_tokens": 50}}
    store, _ = ready_store(client, words, chunking_strategy=strategy)
    hits = client.vector_stores.search(store.id, query="zebra").data
    # Windows of 100 words every 50: [150, 250) and [200, 260) hold word 220; the shorter scores higher.
    assert [len(h.content[0].text.split()) for h in hits] == [60, 100]
    assert hits[0].content[0].text.startswith("w200 ") and hits[1].content[0].text.startswith("w150 ")


def test_stats_count_every_route(raw, fake):
    stored = upload(raw, b"pizza")
    store = raw.post("/v1/vector_stores", json={"file_ids": [stored["id"]]}).json()
    raw.post(f"/v1/vector_stores/{store['id']}/search", json={"query": "pizza"})
    raw.get(f"/v1/files/{stored['id']}")
    requests = raw.get("/_fake/stats").json()["requests"]
    assert requests["POST /v1/files"] == 1 and requests["GET /v1/files/{file_id}"] == 1
    assert requests["POST /v1/vector_stores"] == 1
    assert requests["POST /v1/vector_stores/{store_id}/search"] == 1
    assert "DELETE /v1/files/{file_id}" not in requests
    json.dumps(fake.stats())


# --- file_search in Responses ----------------------------------------------------------------

QUESTION = "What is Travis's favorite food?"
INCLUDE_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def file_search(store_id, **extra):
    return {"type": "file_search", "vector_store_ids": [store_id], **extra}


def ask(client, text, tools, **extra):
    created = client.responses.create(model="gpt-4o", input=text, background=True, tools=tools, **extra)
    deadline = time.time() + 3
    while True:
        response = client.responses.retrieve(created.id)
        if response.status not in ("queued", "in_progress") or time.time() > deadline:
            return response


def test_a_response_searches_its_stores_and_cites_without_a_marker(client):
    store, (file_id,) = ready_store(client, FOODS)
    response = ask(client, QUESTION, [file_search(store.id)])
    assert response.status == "completed" and [item.type for item in response.output] == ["file_search_call", "message"]
    call = response.output[0]
    assert call.id.startswith("fs_") and call.status == "completed"
    assert call.queries == [QUESTION] and call.results is None
    part = response.output[1].content[0]
    assert part.text == f"Echo: {QUESTION} | file_search -> Travis's favorite food is pizza."
    assert "【" not in part.text
    (annotation,) = part.annotations
    assert (annotation.type, annotation.file_id, annotation.filename) == ("file_citation", file_id, "doc0.txt")
    assert annotation.index == len(part.text) - 1 and part.text[annotation.index] == "."
    assert response.tools[0].model_dump() == {
        "type": "file_search",
        "vector_store_ids": [store.id],
        "filters": None,
        "max_num_results": 20,
        "ranking_options": {"ranker": "auto", "score_threshold": 0.0, "hybrid_search": None},
    }


def test_include_gives_the_results_and_the_search_counts_as_input(client):
    store, (file_id,) = ready_store(client, FOODS)
    plain = ask(client, QUESTION, [])
    searched = ask(client, QUESTION, [file_search(store.id)], include=["file_search_call.results"])
    results = searched.output[0].results
    assert [r.text for r in results] == ["Travis's favorite food is pizza.", "Filip's favorite food is cake."]
    assert all(r.file_id == file_id and r.filename == "doc0.txt" and 0 < r.score <= 1 for r in results)
    assert results[0].score > results[1].score
    assert searched.usage.input_tokens == plain.usage.input_tokens + 10
    again = ask(client, QUESTION, [file_search(store.id)], include=["file_search_call.results"])
    assert again.usage == searched.usage
    limited = ask(client, QUESTION, [file_search(store.id, max_num_results=1)], include=["file_search_call.results"])
    assert len(limited.output[0].results) == 1 and limited.usage.input_tokens == plain.usage.input_tokens + 5


def test_two_files_give_two_citations_each_before_its_period(client):
    store, ids = ready_store(client, "Travis likes pizza with olives.", "Travis also likes pizza on Fridays!")
    response = ask(client, "does travis like pizza", [file_search(store.id)])
    part = response.output[1].content[0]
    assert part.text.endswith("| file_search -> Travis likes pizza with olives. Travis also likes pizza on Fridays.")
    assert [a.file_id for a in part.annotations] == ids
    for annotation in part.annotations:
        assert part.text[annotation.index] == "." and part.text[annotation.index - 1].isalpha()


def test_a_turn_that_calls_a_function_searches_only_when_it_answers(client):
    store, _ = ready_store(client, FOODS)
    tools = [
        file_search(store.id),
        {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}},
    ]
    conversation = client.conversations.create()
    text = f"{QUESTION} [fake call=lookup]"
    first = ask(client, text, tools, conversation=conversation.id)
    assert [item.type for item in first.output] == ["function_call"]
    output = {"type": "function_call_output", "call_id": first.output[0].call_id, "output": "done"}
    second = ask(client, [output], tools, conversation=conversation.id)
    assert [item.type for item in second.output] == ["file_search_call", "message"]
    assert second.output[0].queries == [QUESTION]
    assert second.output_text.endswith("| lookup -> done | file_search -> Travis's favorite food is pizza.")
    assert second.output[1].content[0].annotations[0].index == len(second.output_text) - 1


def test_nothing_found_answers_without_citation(client, fake):
    store, _ = ready_store(client, FOODS)
    fake.config.file_processing_seconds = 5
    slow = client.files.create(file=("slow.txt", b"quantum chromodynamics"), purpose="assistants")
    client.vector_stores.files.create(vector_store_id=store.id, file_id=slow.id)
    response = ask(client, "quantum chromodynamics", [file_search(store.id)], include=["file_search_call.results"])
    assert response.output[0].queries == ["quantum chromodynamics"] and response.output[0].results == []
    part = response.output[1].content[0]
    assert part.text == "Echo: quantum chromodynamics" and part.annotations == []


def test_the_search_joins_the_conversation(client):
    store, _ = ready_store(client, FOODS)
    conversation = client.conversations.create()
    created = client.responses.create(
        model="gpt-4o", input=QUESTION, background=True, conversation=conversation.id, tools=[file_search(store.id)]
    )
    deadline = time.time() + 3
    while client.responses.retrieve(created.id).status != "completed" and time.time() < deadline:
        time.sleep(0.01)
    items = client.conversations.items.list(conversation.id, order="asc").data
    assert [item.type for item in items] == ["message", "file_search_call", "message"]
    assert items[2].content[0].annotations[0].type == "file_citation"


def test_a_bad_file_search_tool_is_refused_before_anything_starts(raw, fake):
    store = raw.post("/v1/vector_stores", json={}).json()
    cases = [
        ({"type": "file_search"}, 400, "tools[0].vector_store_ids"),
        ({"type": "file_search", "vector_store_ids": "vs_x"}, 400, "tools[0].vector_store_ids"),
        (
            {"type": "file_search", "vector_store_ids": [store["id"]], "max_num_results": 0},
            400,
            "tools[0].max_num_results",
        ),
        (
            {"type": "file_search", "vector_store_ids": [store["id"]], "ranking_options": {"ranker": "fast"}},
            400,
            "tools[0].ranking_options.ranker",
        ),
        ({"type": "file_search", "vector_store_ids": ["vs_missing"]}, 404, "vector_store_id"),
    ]
    for tool, status, param in cases:
        body = {"model": "gpt-4o", "background": True, "input": "hi", "tools": [tool]}
        assert error_of(raw.post("/v1/responses", json=body), status)["param"] == param
    assert fake.responses == {} and fake.stats()["runs_created"] == 0


def sse_events(answer):
    assert answer.status_code == 200, answer.text
    return [json.loads(line[5:]) for line in answer.text.splitlines() if line.startswith("data:")]


def test_a_streamed_search_sends_the_call_then_the_annotation_between_deltas(raw, client):
    store, (file_id,) = ready_store(client, FOODS)
    body = {"model": "gpt-4o", "background": True, "stream": True, "input": QUESTION, "tools": [file_search(store.id)]}
    events = sse_events(raw.post("/v1/responses", json=body))
    kinds = [e["type"] for e in events]
    assert kinds[:8] == [
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.output_item.added",
        "response.file_search_call.in_progress",
        "response.file_search_call.searching",
        "response.file_search_call.completed",
        "response.output_item.done",
    ]
    added, done = events[3], events[7]
    assert (
        added["item"]["type"] == "file_search_call"
        and added["item"]["queries"] == []
        and added["item"]["results"] is None
    )
    assert done["item"]["queries"] == [QUESTION] and done["item"]["status"] == "completed"
    assert all(e["item_id"] == added["item"]["id"] and e["output_index"] == 0 for e in events[4:7])
    assert kinds[8:10] == ["response.output_item.added", "response.content_part.added"]
    assert events[8]["output_index"] == 1 and kinds[-1] == "response.completed"
    at = kinds.index("response.output_text.annotation.added")
    annotation = events[at]
    assert kinds[at - 1] == kinds[at + 1] == "response.output_text.delta"
    streamed = "".join(e["delta"] for e in events[:at] if e["type"] == "response.output_text.delta")
    assert streamed.endswith("pizza") and events[at + 1]["delta"] == "."
    assert annotation["annotation"] == {
        "type": "file_citation",
        "file_id": file_id,
        "filename": "doc0.txt",
        "index": len(streamed),
    }
    assert (annotation["annotation_index"], annotation["content_index"], annotation["output_index"]) == (0, 0, 1)
    part_done = next(e for e in events if e["type"] == "response.content_part.done")
    assert part_done["part"]["annotations"] == [annotation["annotation"]]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["file_search_call", "message"]
    assert final["usage"]["input_tokens"] > 5


def test_the_sdk_reads_a_streamed_search(client):
    store, _ = ready_store(client, FOODS)
    stream = client.responses.create(
        model="gpt-4o", input=QUESTION, background=True, stream=True, tools=[file_search(store.id)]
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert "response.file_search_call.searching" in kinds and "response.output_text.annotation.added" in kinds
    assert events[-1].response.output[1].content[0].annotations[0].index == len(events[-1].response.output_text) - 1


# --- file_search and attachments in Assistants -----------------------------------------------


def wait_run(client, thread_id, run_id, timeout=3.0):
    deadline = time.time() + timeout
    while True:
        run = client.beta.threads.runs.retrieve(run_id, thread_id=thread_id)
        if run.status not in ("queued", "in_progress", "cancelling") or time.time() > deadline:
            return run
        time.sleep(0.01)


def attach(file_id, *kinds):
    return {"file_id": file_id, "tools": [{"type": kind} for kind in kinds or ("file_search",)]}


def test_attachments_make_and_extend_the_thread_store(client, raw):
    first = upload(raw, FOODS.encode(), "favorite_foods.txt")
    second = upload(raw, b"Anna's favorite food is soup.", "more_foods.txt")
    code = upload(raw, b"1,2,3", "numbers.csv")
    thread = client.beta.threads.create(
        messages=[
            {
                "role": "user",
                "content": "hi",
                "attachments": [attach(first["id"]), attach(code["id"], "code_interpreter")],
            }
        ]
    )
    (store_id,) = thread.tool_resources.file_search.vector_store_ids
    store = client.vector_stores.retrieve(store_id)
    assert (
        store.file_counts.total == 1
        and store.expires_after.days == 7
        and store.expires_after.anchor == "last_active_at"
    )
    message = client.beta.threads.messages.create(
        thread.id, role="user", content="more", attachments=[attach(second["id"])]
    )
    assert message.attachments[0].file_id == second["id"]
    assert client.beta.threads.retrieve(thread.id).tool_resources.file_search.vector_store_ids == [store_id]
    assert client.vector_stores.retrieve(store_id).file_counts.total == 2
    listed = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [[a.file_id for a in m.attachments] for m in listed] == [[first["id"], code["id"]], [second["id"]]]
    plain = client.beta.threads.create(
        messages=[{"role": "user", "content": "x", "attachments": [attach(code["id"], "code_interpreter")]}]
    )
    assert plain.tool_resources.model_dump(exclude_none=True) == {}


def test_bad_attachments_and_resources_create_nothing(raw, fake):
    stored = upload(raw, b"words")
    stores = [raw.post("/v1/vector_stores", json={}).json()["id"] for _ in range(2)]
    known = set(fake.vector_stores)
    cases = [
        ({"messages": [{"role": "user", "content": "x", "attachments": [attach("file-nope")]}]}, 404),
        ({"messages": [{"role": "user", "content": "x", "attachments": [attach(stored["id"], "retrieval")]}]}, 400),
        ({"messages": [{"role": "user", "content": "x", "attachments": [{"tools": []}]}]}, 400),
        (
            {
                "messages": [
                    {"role": "user", "content": "x", "attachments": [attach(stored["id"])]},
                    {"role": "user", "content": "y", "attachments": [attach("file-nope")]},
                ]
            },
            404,
        ),
        ({"tool_resources": {"file_search": {"vector_store_ids": stores}}}, 400),
        ({"tool_resources": {"file_search": {"vector_store_ids": ["vs_nope"]}}}, 404),
        ({"tool_resources": {"code_interpreter": "file-x"}}, 400),
        ({"tool_resources": {"code_interpreter": {"file_ids": [stored["id"]] * 21}}}, 400),
    ]
    for body, status in cases:
        error_of(raw.post("/v1/threads", json=body), status)
    assert fake.threads == {} and set(fake.vector_stores) == known


def test_thread_store_helper_and_given_store_show_in_tool_resources(client, raw):
    stored = upload(raw, FOODS.encode())
    made = client.beta.threads.create(tool_resources={"file_search": {"vector_stores": [{"file_ids": [stored["id"]]}]}})
    (store_id,) = made.tool_resources.file_search.vector_store_ids
    assert client.vector_stores.retrieve(store_id).file_counts.total == 1
    given = client.beta.threads.create(tool_resources={"file_search": {"vector_store_ids": [store_id]}})
    assert given.tool_resources.file_search.vector_store_ids == [store_id]


def test_a_run_cites_an_attached_file_with_the_marker_in_the_text(client, raw):
    stored = upload(raw, FOODS.encode(), "favorite_foods.txt")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "What is Filip's favorite food?", "attachments": [attach(stored["id"])]}]
    )
    time.sleep(0.1)
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_test")
    assert wait_run(client, thread.id, run.id).status == "completed"
    text = client.beta.threads.messages.list(thread.id).data[0].content[0].text
    marker = "【4:0†favorite_foods.txt】"
    assert text.value.endswith(f"| file_search -> Filip's favorite food is cake{marker}.")
    (annotation,) = text.annotations
    assert annotation.type == "file_citation" and annotation.file_citation.file_id == stored["id"]
    assert text.value[annotation.start_index : annotation.end_index] == annotation.text == marker
    assert annotation.end_index - annotation.start_index == 24 and text.value[annotation.end_index] == "."


def test_run_steps_show_the_search_then_the_message(client, raw):
    stored = upload(raw, FOODS.encode(), "favorite_foods.txt")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": QUESTION, "attachments": [attach(stored["id"])]}]
    )
    time.sleep(0.1)
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_test")
    done = wait_run(client, thread.id, run.id)
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert [s.type for s in steps] == ["message_creation", "tool_calls"]
    message, search = steps
    reply = client.beta.threads.messages.list(thread.id).data[0]
    assert message.step_details.message_creation.message_id == reply.id and message.status == "completed"
    (call,) = search.step_details.tool_calls
    assert call.type == "file_search" and call.id.startswith("call_")
    assert call.file_search.ranking_options.model_dump() == {"ranker": "default_2024_08_21", "score_threshold": 0.0}
    assert [r.file_name for r in call.file_search.results] == ["favorite_foods.txt"] * 2
    assert all(r.content is None for r in call.file_search.results)
    assert all(s.usage is not None and s.run_id == run.id and s.thread_id == thread.id for s in steps)
    assert done.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in steps)
    with_content = client.beta.threads.runs.steps.retrieve(
        search.id, thread_id=thread.id, run_id=run.id, include=[INCLUDE_CONTENT]
    )
    texts = [r.content[0].text for r in with_content.step_details.tool_calls[0].file_search.results]
    assert texts == ["Travis's favorite food is pizza.", "Filip's favorite food is cake."]
    oldest = client.beta.threads.runs.steps.list(
        run.id, thread_id=thread.id, order="asc", limit=1, include=[INCLUDE_CONTENT]
    )
    assert oldest.data[0].id == search.id and oldest.has_more is True
    assert oldest.data[0].step_details.tool_calls[0].file_search.results[0].content[0].type == "text"
    url = f"/v1/threads/{thread.id}/runs/{run.id}/steps"
    assert error_of(raw.get(url, params={"include[]": "everything"}), 400)["param"] == "include[]"
    error_of(raw.get(f"{url}/step_nope"), 404)
    assert raw.get(url, headers={"OpenAI-Beta": ""}).status_code == 400


def test_an_assistant_with_knowledge_cites_without_attachments(client, raw):
    store, (file_id,) = ready_store(client, FOODS)
    search_tool = {"type": "file_search", "file_search": {"max_num_results": 1}}
    answer = raw.post(
        "/_fake/assistants/asst_curator",
        json={"tools": [search_tool], "tool_resources": {"file_search": {"vector_store_ids": [store.id]}}},
    )
    assert answer.json()["tool_resources"]["file_search"]["vector_store_ids"] == [store.id]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_curator")
    assert [t.type for t in run.tools] == ["file_search"]
    wait_run(client, thread.id, run.id)
    text = client.beta.threads.messages.list(thread.id).data[0].content[0].text
    assert text.annotations[0].file_citation.file_id == file_id and "pizza【4:0†doc0.txt】." in text.value
    search = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data[1]
    assert len(search.step_details.tool_calls[0].file_search.results) == 1
    other = client.beta.threads.create(messages=[{"role": "user", "content": QUESTION}])
    plain = client.beta.threads.runs.create(other.id, assistant_id="asst_other")
    wait_run(client, other.id, plain.id)
    assert client.beta.threads.messages.list(other.id).data[0].content[0].text.annotations == []
    assert [s.type for s in client.beta.threads.runs.steps.list(plain.id, thread_id=other.id).data] == [
        "message_creation"
    ]


def test_function_rounds_get_tool_calls_steps(client):
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": 'time? [fake call=now args={"tz": "UTC"}]'}]
    )
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_test")
    waiting = wait_run(client, thread.id, run.id)
    assert waiting.status == "requires_action"
    (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    (call,) = step.step_details.tool_calls
    assert step.status == "in_progress" and step.usage is None and step.expires_at == waiting.expires_at
    assert call.type == "function" and call.function.name == "now" and call.function.output is None
    assert call.id == waiting.required_action.submit_tool_outputs.tool_calls[0].id
    client.beta.threads.runs.submit_tool_outputs(
        run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": call.id, "output": "noon"}]
    )
    wait_run(client, thread.id, run.id)
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id, order="asc").data
    assert [s.type for s in steps] == ["tool_calls", "message_creation"]
    assert steps[0].status == "completed" and steps[0].usage is not None
    assert steps[0].step_details.tool_calls[0].function.output == "noon"


def test_a_cancelled_run_cancels_its_open_step(client, fake):
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "[fake call=lookup]"}])
    run = client.beta.threads.runs.create(thread.id, assistant_id="asst_test")
    assert wait_run(client, thread.id, run.id).status == "requires_action"
    client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert wait_run(client, thread.id, run.id).status == "cancelled"
    (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert step.status == "cancelled" and step.cancelled_at is not None and step.usage is None

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
    fake.config.file_processing_seconds = 0.2
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
    slow = upload(raw, b"slow words here [fake processing=0.4]")
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

"""Runs that search knowledge: attachments in a thread's store, a type's stores, and the citations
of the answer, blocking and streamed, on both engines, through raw HTTP and the official SDK."""

from __future__ import annotations

import io

import openai
import pytest

from app.citations import StreamedCitations, annotated
from app.contract import UpstreamTransient
from app.engines.responses import file_search_call
from tests.helpers import TOKENS, Api, upstream_calls

FOODS = b"Travis's favorite food is pizza.\n\nFilip's favorite food is cake.\n"
QUESTION = "What is Travis's favorite food?"
responses_only = pytest.mark.parametrize("engine_name", ["responses"])


@pytest.fixture
def quick(fake):
    """Files in a store finish processing quickly."""
    fake.config.file_processing_seconds = 0.05
    return fake


def upload(api, content=FOODS, filename="favorite_foods.txt") -> str:
    answer = api.post("/files", data={"purpose": "assistants", "file": (io.BytesIO(content), filename)})
    assert answer.status_code == 200, answer.json
    return answer.json["id"]


def attached(file_id: str) -> list[dict]:
    return [{"file_id": file_id, "tools": [{"type": "file_search"}]}]


def ask(api, thread_id: str, file_id: str | None = None, text: str = QUESTION):
    body = {"role": "user", "content": text}
    if file_id is not None:
        body["attachments"] = attached(file_id)
    return api.post(f"/threads/{thread_id}/messages", json=body)


def answer_text(api, thread_id: str) -> dict:
    """The latest assistant message's text part, as the messages list shows it."""
    latest = api.get(f"/threads/{thread_id}/messages?limit=1").json["data"][0]
    assert latest["role"] == "assistant"
    return latest["content"][0]["text"]


def assert_cites(text: dict, file_id: str, filename: str = "favorite_foods.txt") -> None:
    """The text cites the file with markers its annotations frame exactly."""
    value, annotations = text["value"], text["annotations"]
    assert annotations, value
    for annotation in annotations:
        assert annotation["type"] == "file_citation"
        assert annotation["file_citation"]["file_id"] == file_id
        assert value[annotation["start_index"] : annotation["end_index"]] == annotation["text"]
        assert annotation["text"].startswith("【") and annotation["text"].endswith(f"†{filename}】")
    assert "pizza" in value


def test_an_attached_file_is_searched_and_cited(api, quick, engine_name):
    file_id = upload(api)
    thread_id = api.new_thread()
    added = ask(api, thread_id, file_id)
    assert added.status_code == 200, added.json
    assert added.json["attachments"] == attached(file_id)
    run = api.run(thread_id)
    assert run.status_code == 200, run.json
    assert run.json["status"] == "completed"
    assert_cites(answer_text(api, thread_id), file_id)
    listed = api.get(f"/threads/{thread_id}/messages?order=asc").json["data"]
    assert listed[0]["attachments"] == attached(file_id)
    store_ids = api.get(f"/threads/{thread_id}").json["tool_resources"]["file_search"]["vector_store_ids"]
    assert len(store_ids) == 1 and file_id in quick.vector_stores[store_ids[0]].files
    if engine_name == "responses":
        assert {"type": "file_search"} in run.json["tools"]


def test_a_blocking_run_read_from_the_upstreams_events_is_cited(make_app, quick, engine_name):
    """WAIT_STRATEGY=stream, a client that waits for the JSON answer: nobody hears the reply's
    text or its citations as they come, and the answer and the thread still cite the file."""
    app = make_app(WAIT_STRATEGY="stream")
    api = Api(app.test_client(), TOKENS["alice"])
    file_id = upload(api)
    thread_id = api.new_thread()
    assert ask(api, thread_id, file_id).status_code == 200
    run = api.run(thread_id)
    assert run.status_code == 200, run.json
    assert run.json["status"] == "completed"
    assert_cites(answer_text(api, thread_id), file_id)


def test_the_sdk_streams_the_citations_that_the_thread_keeps(live_server, quick, engine_name):
    with openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1", max_retries=0) as sdk:
        file = sdk.files.create(file=("favorite_foods.txt", FOODS), purpose="assistants")
        thread = sdk.beta.threads.create(
            messages=[{"role": "user", "content": QUESTION, "attachments": attached(file.id)}]
        )
        value, annotations = "", []
        with sdk.beta.threads.runs.stream(thread_id=thread.id, assistant_id="curator") as stream:
            for event in stream:
                if event.event == "thread.message.delta":
                    for part in event.data.delta.content or []:
                        value += part.text.value or ""
                        annotations += [a.model_dump(exclude_none=True) for a in part.text.annotations or []]
            final = stream.get_final_run()
        assert final.status == "completed"
        stored = sdk.beta.threads.messages.list(thread.id, limit=1).data[0].content[0].text
        assert value == stored.value
        assert [a.pop("index") for a in annotations] == list(range(len(annotations)))
        kept = [a.model_dump(exclude_none=True) for a in stored.annotations]
        assert annotations and [
            dict(a, file_citation={"file_id": a["file_citation"]["file_id"]}) for a in annotations
        ] == [dict(a, file_citation={"file_id": a["file_citation"]["file_id"]}) for a in kept]
        assert_cites({"value": stored.value, "annotations": kept}, file.id)


def test_a_types_vector_stores_are_cited_without_attachments(make_app, quick, engine_name):
    owner = make_app()
    admin_api = _api(owner, "alice")
    file_id = upload(admin_api)
    store = admin_api.post("/vector_stores", json={"file_ids": [file_id]}).json
    if engine_name == "responses":
        app = make_app(ASSISTANT_CURATOR_VECTOR_STORE_IDS=store["id"], ASSISTANT_CURATOR_FILE_SEARCH_MAX_RESULTS=5)
    else:  # the upstream assistant carries its own stores
        quick.assistants["asst_curator"] = {
            "tools": [{"type": "file_search"}],
            "tool_resources": {"file_search": {"vector_store_ids": [store["id"]]}},
        }
        app = owner
    api = _api(app, "bob")
    thread_id = api.new_thread()
    assert ask(api, thread_id).status_code == 200
    run = api.run(thread_id)
    assert run.status_code == 200 and run.json["status"] == "completed", run.json
    assert {"type": "file_search"} in run.json["tools"]
    assert_cites(answer_text(api, thread_id), file_id)
    if engine_name == "responses":
        created = [r for r in quick.responses.values() if r.conversation and r.conversation.id == thread_id]
        tool = next(t for t in created[0].tools if t["type"] == "file_search")
        assert tool["vector_store_ids"] == [store["id"]] and tool["max_num_results"] == 5


def test_another_users_file_is_a_404_that_never_reaches_the_upstream(api, quick, engine_name):
    file_id = upload(api.as_user("bob"))
    thread_id = api.new_thread()
    before = upstream_calls(quick)
    answer = ask(api, thread_id, file_id)
    assert answer.status_code == 404 and file_id in answer.json["error"]
    created = api.post(
        "/threads", json={"messages": [{"role": "user", "content": "hi", "attachments": attached(file_id)}]}
    )
    assert created.status_code == 404
    assert upstream_calls(quick) == before


@pytest.mark.parametrize(
    "attachments, message",
    [
        ([{"file_id": "file-a", "tools": [{"type": "file_search"}]}] * 11, "at most 10 files"),
        ([{"file_id": "file-a", "tools": [{"type": "file_search"}, {"type": "file_search"}]}], "at most once"),
        ([{"file_id": "file-a", "tools": [{"type": "retrieval"}]}], "each tool is"),
        ([{"file_id": "file-a"}], "non-empty array"),
        ([{"file_id": "../x", "tools": [{"type": "file_search"}]}], "file_id"),
        ("file-a", "must be an array"),
    ],
)
def test_malformed_attachments_are_a_400_before_the_upstream(api, quick, attachments, message):
    thread_id = api.new_thread()
    before = upstream_calls(quick)
    body = {"role": "user", "content": "hi", "attachments": attachments}
    answer = api.post(f"/threads/{thread_id}/messages", json=body)
    assert answer.status_code == 400 and message in answer.json["error"], answer.json
    assert upstream_calls(quick) == before


def test_code_interpreter_attachments_are_refused_on_responses_and_passed_on_assistants(api, quick, engine_name):
    file_id = upload(api)
    thread_id = api.new_thread()
    body = {
        "role": "user",
        "content": "hi",
        "attachments": [{"file_id": file_id, "tools": [{"type": "code_interpreter"}]}],
    }
    answer = api.post(f"/threads/{thread_id}/messages", json=body)
    if engine_name == "responses":
        assert answer.status_code == 400 and "not supported on this engine" in answer.json["error"]
    else:
        assert answer.status_code == 200 and answer.json["attachments"] == body["attachments"]


@responses_only
def test_a_file_still_processing_is_waited_for(api, quick):
    file_id = upload(api, FOODS + b"[fake processing=0.8]")
    thread_id = api.new_thread()
    assert ask(api, thread_id, file_id).status_code == 200
    run = api.run(thread_id)
    assert run.status_code == 200 and run.json["status"] == "completed"
    assert_cites(answer_text(api, thread_id), file_id)


@responses_only
def test_a_file_that_failed_processing_is_a_400_naming_it(api, quick):
    file_id = upload(api, b"Nothing to see. [fake unsupported]", "broken.txt")
    thread_id = api.new_thread()
    assert ask(api, thread_id, file_id).status_code == 200
    before = upstream_calls(quick, "POST /v1/responses")
    run = api.run(thread_id)
    assert run.status_code == 400 and file_id in run.json["error"] and "broken.txt" in run.json["error"]
    assert "unsupported_file" in run.json["error"]
    assert upstream_calls(quick, "POST /v1/responses") == before
    assert api.delete(f"/files/{file_id}").status_code == 200  # the way out the error names
    assert api.run(thread_id).status_code == 200


@responses_only
def test_a_type_at_the_store_limit_refuses_a_thread_store_before_the_upstream(make_app, quick):
    owner = _api(make_app(), "alice")
    stores = [owner.post("/vector_stores", json={}).json["id"] for _ in range(2)]
    api = _api(make_app(ASSISTANT_CURATOR_VECTOR_STORE_IDS=",".join(stores)), "alice")
    file_id = upload(api)
    thread_id = api.new_thread()
    assert ask(api, thread_id, file_id).status_code == 200
    before = upstream_calls(quick, "POST /v1/responses")
    run = api.run(thread_id)
    assert run.status_code == 400 and "at most 2 vector stores" in run.json["error"]
    assert upstream_calls(quick, "POST /v1/responses") == before
    assert api.run(thread_id).status_code == 400  # the thread is not left busy


@responses_only
def test_deleting_a_thread_deletes_its_store_and_a_failed_delete_is_tried_again(app, api, quick, monkeypatch):
    file_id = upload(api)
    first, second = api.new_thread(), api.new_thread()
    for thread_id in (first, second):
        assert ask(api, thread_id, file_id).status_code == 200
    stores = [
        api.get(f"/threads/{t}").json["tool_resources"]["file_search"]["vector_store_ids"][0] for t in (first, second)
    ]

    assert api.delete(f"/threads/{first}").status_code == 200
    assert stores[0] not in quick.vector_stores and file_id in quick.files  # the file stays the user's

    upstream = app.extensions["services"]
    real_delete = upstream.knowledge_upstream.delete_vector_store

    def failing(store_id):
        raise UpstreamTransient("delete vector store: 503")

    monkeypatch.setattr(upstream.knowledge_upstream, "delete_vector_store", failing)
    assert api.delete(f"/threads/{second}").status_code == 200
    assert stores[1] in quick.vector_stores
    pending = upstream.knowledge.pending_deletions()
    assert [p["vector_store_id"] for p in pending] == [stores[1]] and pending[0]["attempts"] == 1

    monkeypatch.setattr(upstream.knowledge_upstream, "delete_vector_store", real_delete)
    now = upstream.knowledge.clock()
    monkeypatch.setattr(upstream.knowledge, "clock", lambda: now + 60)  # its next try is due
    api.new_thread()  # a thread created (or deleted) tries due deletes again
    assert stores[1] not in quick.vector_stores
    assert upstream.knowledge.pending_deletions() == []


@responses_only
def test_include_asks_for_the_results_and_an_unknown_include_is_a_400(api, quick):
    file_id = upload(api)
    thread_id = api.new_thread()
    assert ask(api, thread_id, file_id).status_code == 200
    bad = api.post(f"/threads/{thread_id}/runs?include[]=step_details.x", json={"assistant_type": "curator"})
    assert bad.status_code == 400 and "include" in bad.json["error"]
    include = "step_details.tool_calls[*].file_search.results[*].content"
    run = api.post(f"/threads/{thread_id}/runs?include[]={include}", json={"assistant_type": "curator"})
    assert run.status_code == 200, run.json
    response = quick.responses[run.json["id"]]
    assert response.search.with_results is True
    item = next(o for o in response.output if o["type"] == "file_search_call")
    call = file_search_call(item)
    assert call["type"] == "file_search" and call["id"] == item["id"]
    result = call["file_search"]["results"][0]
    assert result["file_id"] == file_id and result["file_name"] == "favorite_foods.txt"
    assert "pizza" in result["content"][0]["text"]


def test_file_search_call_without_results_has_none():
    item = {"id": "fs_1", "type": "file_search_call", "status": "completed", "queries": ["q"], "results": None}
    assert file_search_call(item) == {
        "id": "fs_1",
        "type": "file_search",
        "file_search": {"ranking_options": {"ranker": "default_2024_08_21", "score_threshold": 0.0}, "results": []},
    }


def _api(app, user):
    from tests.helpers import Api

    return Api(app.test_client(), TOKENS[user])


@responses_only
def test_every_response_of_a_run_searches_the_same_stores(api, quick):
    file_id = upload(api)
    thread_id = api.new_thread()
    assert ask(api, thread_id, file_id, QUESTION + " [fake call=lookup]").status_code == 200
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}
    run = api.run(thread_id, tools=[tool])
    assert run.json["status"] == "requires_action", run.json
    assert {"type": "file_search"} in run.json["tools"]
    call_id = run.json["required_action"]["submit_tool_outputs"]["tool_calls"][0]["id"]
    outputs = {"tool_outputs": [{"tool_call_id": call_id, "output": "nothing"}]}
    done = api.post(f"/threads/{thread_id}/runs/{run.json['id']}/submit_tool_outputs", json=outputs)
    assert done.status_code == 200 and done.json["status"] == "completed", done.json
    responses = [r for r in quick.responses.values() if r.conversation and r.conversation.id == thread_id]
    assert len(responses) == 2
    for response in responses:
        tool = next(t for t in response.tools if t["type"] == "file_search")
        assert len(tool["vector_store_ids"]) == 1
    assert_cites(answer_text(api, thread_id), file_id)


def test_markers_go_in_at_each_index_and_the_stream_places_them_alike():
    text = "Café au lait is Travis's. Cake is Filip's."
    cites = [
        {"type": "file_citation", "file_id": "file-b", "filename": "b.txt", "index": 41},
        {"type": "file_citation", "file_id": "file-a", "filename": "a.txt", "index": 24},
        {"type": "url_citation", "url": "https://example.com", "start_index": 0, "end_index": 4},
    ]
    value, annotations = annotated(text, cites, turn=1)
    assert value == "Café au lait is Travis's【1:0†a.txt】. Cake is Filip's【1:1†b.txt】."
    assert [a["file_citation"]["file_id"] for a in annotations] == ["file-a", "file-b"]
    for annotation in annotations:
        assert value[annotation["start_index"] : annotation["end_index"]] == annotation["text"]

    streamed, placed = StreamedCitations(turn=1), []
    written = ""
    for piece, cite in (("Café au lait is Travis's", cites[1]), (". Cake is Filip's", cites[0]), (".", None)):
        streamed.text(piece)
        written += piece
        if cite is not None:
            marker, annotation = streamed.cite(cite)
            written += marker
            placed.append(annotation)
    assert written == value and placed == annotations
    assert streamed.cite(cites[1]) is None  # a citation behind the text already sent cannot go in


@responses_only
def test_a_thread_store_gone_upstream_is_forgotten_and_the_run_goes_on(api, quick):
    file_id = upload(api)
    thread_id = api.new_thread()
    assert ask(api, thread_id, file_id).status_code == 200
    store_id = api.get(f"/threads/{thread_id}").json["tool_resources"]["file_search"]["vector_store_ids"][0]
    del quick.vector_stores[store_id]  # deleted behind the backend's back
    run = api.run(thread_id)
    assert run.status_code == 200 and run.json["status"] == "completed"
    assert api.get(f"/threads/{thread_id}").json["tool_resources"] == {}

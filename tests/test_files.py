"""Files a user uploads through the backend: owned, size-limited while they stream in, checked before the upstream."""

from __future__ import annotations

import io
import json
import socket

import openai
import pytest
from werkzeug.test import EnvironBuilder, run_wsgi_app

from tests.helpers import TOKENS, Api, ServerThread, upstream_calls

UPLOAD = "POST /v1/files"
KNOWLEDGE = "Travis's favorite food is pizza.\n\nFilip's favorite food is cake.\n"

# The files routes do not depend on the engine: one is enough, except for the SDK's flow.
one_engine = pytest.mark.parametrize("engine_name", ["responses"])


def upload(api: Api, content: bytes = KNOWLEDGE.encode(), filename="foods.txt", purpose="assistants"):
    return api.post("/files", data={"purpose": purpose, "file": (io.BytesIO(content), filename)})


@one_engine
def test_an_upload_goes_upstream_and_is_listed_for_its_owner_only(api, fake):
    answer = upload(api)
    assert answer.status_code == 200, answer.json
    file = answer.json
    assert file["object"] == "file" and file["filename"] == "foods.txt" and file["purpose"] == "assistants"
    assert file["bytes"] == len(KNOWLEDGE.encode())
    assert fake.files[file["id"]].content == KNOWLEDGE.encode()  # the bytes reached the upstream whole
    assert upstream_calls(fake, UPLOAD) == 1

    listed = api.get("/files").json
    assert listed["object"] == "list" and [f["id"] for f in listed["data"]] == [file["id"]]
    assert api.get(f"/files/{file['id']}").json["id"] == file["id"]

    bob = api.as_user("bob")
    assert bob.get("/files").json["data"] == []
    before = upstream_calls(fake)
    for call in (bob.get, bob.delete):
        answer = call(f"/files/{file['id']}")
        assert answer.status_code == 404 and file["id"] in answer.json["error"]
    assert upstream_calls(fake) == before  # another user's file never reaches the upstream
    assert file["id"] in fake.files


@one_engine
def test_a_file_is_deleted_upstream_and_forgotten(api, fake):
    file_id = upload(api).json["id"]
    deleted = api.delete(f"/files/{file_id}").json
    assert deleted == {"id": file_id, "object": "file", "deleted": True}
    assert file_id not in fake.files
    assert api.get(f"/files/{file_id}").status_code == 404
    assert api.get("/files").json["data"] == []


@one_engine
def test_the_list_pages_in_order_and_filters_by_purpose(api):
    ids = [upload(api, f"note {i}".encode(), f"n{i}.txt").json["id"] for i in range(3)]
    newest_first = api.get("/files?limit=2").json
    assert [f["id"] for f in newest_first["data"]] == [ids[2], ids[1]] and newest_first["has_more"] is True
    rest = api.get(f"/files?limit=2&after={ids[1]}").json
    assert [f["id"] for f in rest["data"]] == [ids[0]] and rest["has_more"] is False
    assert [f["id"] for f in api.get("/files?order=asc").json["data"]] == ids
    assert api.get("/files?purpose=batch").json["data"] == []
    assert api.get("/files?limit=0").status_code == 400
    assert api.get("/files?before=x").status_code == 400  # OpenAI's file list has no `before`


@one_engine
@pytest.mark.parametrize(
    "form, message",
    [
        ({"purpose": "assistants"}, "'file' is required"),
        ({"file": (io.BytesIO(b"abc"), "a.txt")}, "'purpose' is required"),
        ({"purpose": "fine-tune", "file": (io.BytesIO(b"abc"), "a.txt")}, "Unsupported 'purpose'"),
        ({"purpose": "assistants", "file": (io.BytesIO(b""), "a.txt")}, "The file is empty"),
        ({"purpose": "assistants", "file": (io.BytesIO(b"abc"), "")}, "needs a filename"),
        ({"purpose": "assistants", "file": "not a file part"}, "'file' is required"),
        ({"purpose": "assistants", "file": (io.BytesIO(b"abc"), "a.txt"), "expires_after[seconds]": "3600"}, "Unknown"),
    ],
)
def test_a_malformed_upload_is_a_400_that_never_reaches_the_upstream(api, fake, form, message):
    answer = api.post("/files", data=form, content_type="multipart/form-data")
    assert answer.status_code == 400 and message in answer.json["error"]
    assert upstream_calls(fake) == 0


@one_engine
def test_a_json_body_is_refused(api, fake):
    answer = api.post("/files", json={"purpose": "assistants", "file": "abc"})
    assert answer.status_code == 400 and "multipart/form-data" in answer.json["error"]
    assert upstream_calls(fake) == 0


@one_engine
def test_a_file_over_the_limit_is_a_413_that_never_reaches_the_upstream(make_app, fake):
    api = Api(make_app(FILE_MAX_BYTES="1000").test_client(), TOKENS["alice"])
    assert upload(api, b"x" * 1000).status_code == 200  # at the limit: taken
    for size in (1001, 200_000):
        answer = upload(api, b"x" * size)
        assert answer.status_code == 413 and "FILE_MAX_BYTES" in answer.json["error"]
    assert upstream_calls(fake, UPLOAD) == 1


class CountingStream(io.RawIOBase):
    """A request body made as it is read, counting the bytes the server took."""

    def __init__(self, head: bytes, body_bytes: int, tail: bytes):
        self.parts = [head, None, tail]
        self.left = body_bytes
        self.read_bytes = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        while self.parts:
            part = self.parts[0]
            if part is None and self.left > 0:
                n = min(len(buffer), self.left)
                buffer[:n] = b"y" * n
                self.left -= n
                break
            if part:
                n = min(len(buffer), len(part))
                buffer[:n] = part[:n]
                self.parts[0] = part[n:]
                break
            self.parts.pop(0)
        else:
            return 0
        self.read_bytes += n
        return n


@one_engine
def test_a_streamed_upload_without_a_length_stops_being_read_at_the_limit(make_app, fake):
    limit = 10_000
    app = make_app(FILE_MAX_BYTES=str(limit))
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    body = CountingStream(head, 50_000_000, f"\r\n--{boundary}--\r\n".encode())
    environ = EnvironBuilder(
        path="/v1/files",
        method="POST",
        content_type=f"multipart/form-data; boundary={boundary}",
        headers={"Authorization": f"Bearer {TOKENS['alice']}", "Transfer-Encoding": "chunked"},
    ).get_environ()
    environ.pop("CONTENT_LENGTH", None)  # no length: the server learns the size only by reading
    environ.update({"wsgi.input": body, "wsgi.input_terminated": True})
    chunks, status, _ = run_wsgi_app(app, environ, buffered=True)
    assert status.startswith("413") and "FILE_MAX_BYTES" in json.loads(b"".join(chunks))["error"]["message"]
    assert body.read_bytes < limit + 64 * 1024 + 128 * 1024  # the limit, the framing, a read ahead: not 50 MB
    assert upstream_calls(fake) == 0


@one_engine
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(make_app, fake):
    server = ServerThread(make_app(FILE_MAX_BYTES="1000"))
    try:
        host, port = server.server.server_address[:2]
        with socket.create_connection((host, port), timeout=5) as sock:
            request = (
                "POST /v1/files HTTP/1.1\r\n"
                f"Host: {host}\r\n"
                f"Authorization: Bearer {TOKENS['alice']}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                "Content-Length: 104857600\r\n\r\n"
            )
            sock.sendall(request.encode())  # headers only: 100 MB announced, none sent
            received = b""
            while chunk := sock.recv(65536):  # the server closes the connection after its answer
                received += chunk
            answer = received.decode()
        assert answer.startswith("HTTP/1.1 413") and "FILE_MAX_BYTES" in answer
    finally:
        server.stop()
    assert upstream_calls(fake) == 0


@one_engine
def test_every_prefix_serves_files(api):
    file_id = upload(api).json["id"]
    for prefix in ("/v1", "/api/assistants/curator", "/api/assistants/tutor"):
        assert api.under(prefix).get(f"/files/{file_id}").json["id"] == file_id


@pytest.mark.parametrize("engine_name", ["responses", "assistants"])
def test_the_sdk_uploads_lists_retrieves_and_deletes(live_server, fake, engine_name):
    with openai.OpenAI(api_key=TOKENS["alice"], base_url=f"{live_server.url}/v1", max_retries=0) as sdk:
        created = sdk.files.create(file=("foods.txt", KNOWLEDGE.encode()), purpose="assistants")
        assert created.id in fake.files and created.bytes == len(KNOWLEDGE.encode())
        assert [f.id for f in sdk.files.list()] == [created.id]
        assert sdk.files.retrieve(created.id).filename == "foods.txt"
        with pytest.raises(openai.BadRequestError, match="Unsupported 'purpose'"):
            sdk.files.create(file=("x.jsonl", b"{}"), purpose="batch")
        with pytest.raises(openai.BadRequestError, match="empty"):
            sdk.files.create(file=("x.txt", b""), purpose="assistants")
        assert sdk.files.delete(created.id).deleted is True
        with pytest.raises(openai.NotFoundError):
            sdk.files.retrieve(created.id)
        kept = sdk.files.create(file=("a.txt", b"alice's"), purpose="assistants")
    with openai.OpenAI(api_key=TOKENS["bob"], base_url=f"{live_server.url}/v1", max_retries=0) as bob:
        before = upstream_calls(fake)
        with pytest.raises(openai.NotFoundError):
            bob.files.retrieve(kept.id)
        with pytest.raises(openai.NotFoundError):
            bob.files.delete(kept.id)
        assert bob.files.list().data == []
    assert upstream_calls(fake) == before and kept.id in fake.files


@one_engine
def test_an_upload_the_record_cannot_keep_is_deleted_upstream_again(api, app, fake, monkeypatch):
    def broken(file, owner):
        raise RuntimeError("database down")

    monkeypatch.setattr(app.extensions["services"].knowledge, "add_file", broken)
    answer = upload(api)
    assert answer.status_code == 500
    assert upstream_calls(fake, UPLOAD) == 1 and upstream_calls(fake, "DELETE /v1/files/{file_id}") == 1
    assert fake.files == {}  # nothing left upstream that no user owns

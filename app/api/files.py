"""Files and vector stores a user owns: `/files`, `/vector_stores`, `/vector_stores/<id>/files`."""

from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from app import knowledge
from app.api import authenticate_caller, services
from app.api import knowledge_validation as kv
from app.api import validation as v
from app.engines.knowledge import POLL_HEADER
from app.errors import ApiError, bad_request

bp = Blueprint("files", __name__)
bp.before_request(authenticate_caller)

# Room for the multipart framing and the `purpose` field around the file itself.
MULTIPART_OVERHEAD_BYTES = 64 * 1024
MAX_FILENAME_CHARS = 255


def _too_large(limit: int) -> ApiError:
    message = f"The file is too large: at most {limit} bytes (FILE_MAX_BYTES)."
    return ApiError(413, message, headers={"x-should-retry": "false"})


def _upload():
    """The multipart `file` and `purpose`, read as they stream in: the read stops at FILE_MAX_BYTES
    (plus the framing) with a 413, and the file is spooled to disk, never held whole in memory."""
    limit = services().settings.file_max_bytes
    if request.mimetype != "multipart/form-data":
        raise bad_request("Send the file as multipart/form-data with the fields 'file' and 'purpose'.")
    request.max_content_length = limit + MULTIPART_OVERHEAD_BYTES
    try:
        form, uploads = request.form, request.files
    except RequestEntityTooLarge:
        raise _too_large(limit) from None
    unknown = sorted((set(form) | set(uploads)) - {"file", "purpose"})
    if unknown:
        raise bad_request(f"Unknown field(s): {', '.join(unknown)}. This route takes: file, purpose.")
    upload = uploads.get("file")
    if upload is None:
        raise bad_request("'file' is required: a multipart file field with a filename.")
    purpose = kv.purpose(form.get("purpose"))
    filename = (upload.filename or "").strip()
    if not filename or len(filename) > MAX_FILENAME_CHARS or any(c in filename for c in "\r\n\0"):
        raise bad_request(f"'file' needs a filename of 1-{MAX_FILENAME_CHARS} characters.")
    stream = upload.stream
    size = stream.seek(0, 2)
    stream.seek(0)
    if size > limit:
        raise _too_large(limit)
    if size == 0:
        raise bad_request("The file is empty.")
    return filename, stream, upload.mimetype or "application/octet-stream", purpose


@bp.post("/files")
def upload_file():
    filename, stream, content_type, purpose = _upload()
    return jsonify(knowledge.upload_file(services(), g.user, filename, stream, content_type, purpose))


@bp.get("/files")
def list_files():
    page = kv.list_args({"limit", "order", "after", "purpose"}, max_limit=10_000, default_limit=10_000)
    purpose = request.args.get("purpose")
    return jsonify(knowledge.list_files(services(), g.user, purpose=purpose, **page))


@bp.get("/files/<file_id>")
def retrieve_file(file_id):
    return jsonify(knowledge.retrieve_file(services(), g.user, v.checked_id(file_id, "file")))


@bp.delete("/files/<file_id>")
def delete_file(file_id):
    return jsonify(knowledge.delete_file(services(), g.user, v.checked_id(file_id, "file")))


@bp.post("/vector_stores")
def create_vector_store():
    s = services()
    fields = {"name", "description", "file_ids", "chunking_strategy", "expires_after", "metadata"}
    body = v.json_body(fields, optional=True)
    kv.optional_text(body, "name", 256)
    kv.optional_text(body, "description", 512)
    if "file_ids" in body:
        body["file_ids"] = kv.file_ids(body["file_ids"])
    kv.chunking_strategy(body.get("chunking_strategy"))
    if body.get("chunking_strategy") and not body.get("file_ids"):
        raise bad_request("'chunking_strategy' applies only with 'file_ids'.")
    kv.expires_after(body.get("expires_after"))
    v.metadata(body.get("metadata"), s.settings.max_metadata_pairs)
    return jsonify(knowledge.create_vector_store(s, g.user, body))


@bp.get("/vector_stores")
def list_vector_stores():
    page = kv.list_args({"limit", "order", "after", "before"}, max_limit=100, default_limit=20)
    return jsonify(knowledge.list_vector_stores(services(), g.user, **page))


@bp.get("/vector_stores/<vector_store_id>")
def retrieve_vector_store(vector_store_id):
    return jsonify(knowledge.retrieve_vector_store(services(), g.user, v.checked_id(vector_store_id, "vector store")))


@bp.delete("/vector_stores/<vector_store_id>")
def delete_vector_store(vector_store_id):
    return jsonify(knowledge.delete_vector_store(services(), g.user, v.checked_id(vector_store_id, "vector store")))


@bp.post("/vector_stores/<vector_store_id>/files")
def add_vector_store_file(vector_store_id):
    store_id = v.checked_id(vector_store_id, "vector store")
    body = v.json_body({"file_id", "attributes", "chunking_strategy"})
    if not isinstance(body.get("file_id"), str):
        raise bad_request("'file_id' is required: the ID of one of your files.")
    v.checked_id(body["file_id"], "file")
    kv.attributes(body.get("attributes"))
    kv.chunking_strategy(body.get("chunking_strategy"))
    return _polled(*knowledge.add_vector_store_file(services(), g.user, store_id, body))


@bp.get("/vector_stores/<vector_store_id>/files")
def list_vector_store_files(vector_store_id):
    store_id = v.checked_id(vector_store_id, "vector store")
    page = kv.list_args({"limit", "order", "after", "before", "filter"}, max_limit=100, default_limit=20)
    status = request.args.get("filter")
    if status is not None and status not in kv.VECTOR_STORE_FILE_FILTERS:
        raise bad_request(f"'filter' must be one of {', '.join(kv.VECTOR_STORE_FILE_FILTERS)}.")
    params = {k: val for k, val in {**page, "filter": status}.items() if val is not None}
    return jsonify(knowledge.list_vector_store_files(services(), g.user, store_id, params))


@bp.get("/vector_stores/<vector_store_id>/files/<file_id>")
def retrieve_vector_store_file(vector_store_id, file_id):
    store_id, file_id = v.checked_id(vector_store_id, "vector store"), v.checked_id(file_id, "file")
    return _polled(*knowledge.retrieve_vector_store_file(services(), g.user, store_id, file_id))


@bp.delete("/vector_stores/<vector_store_id>/files/<file_id>")
def delete_vector_store_file(vector_store_id, file_id):
    store_id, file_id = v.checked_id(vector_store_id, "vector store"), v.checked_id(file_id, "file")
    return jsonify(knowledge.delete_vector_store_file(services(), g.user, store_id, file_id))


def _polled(body: dict, poll_after_ms: str | None):
    """The answer, with the upstream's poll hint for the SDK's `*_and_poll` helpers."""
    response = jsonify(body)
    if poll_after_ms is not None:
        response.headers[POLL_HEADER] = poll_after_ms
    return response

"""The Files API: uploads kept in memory as OpenAI File objects. Every function expects `fake.lock` to be held."""

from .errors import ApiError, bad_request, missing_param, not_found
from .listing import list_body, paginate, parse_list_params
from .state import alnum_id, epoch

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# Purposes whose bytes GET /v1/files/{id}/content returns; every other purpose is a 400.
DOWNLOADABLE = frozenset({"assistants_output", "batch", "batch_output", "fine-tune-results", "vision"})
UPLOAD_FIELDS = {"file", "purpose", "expires_after[anchor]", "expires_after[seconds]"}
BATCH_EXPIRY_SECONDS = 30 * 86400
EXPIRY_RANGE = (3600, 2592000)


class StoredFile:
    """One uploaded file: its bytes and the metadata OpenAI shows."""

    def __init__(self, filename, purpose, content, now, expires_at):
        self.id = alnum_id("file-", 22)
        self.filename = filename
        self.purpose = purpose
        self.content = content
        self.created_at = int(now)
        self.expires_at = expires_at

    def text(self):
        """The content as text, or None when it is not UTF-8."""
        try:
            return self.content.decode("utf-8")
        except UnicodeDecodeError:
            return None

    def to_api(self):
        """The OpenAI `file` object (already `processed`, as real uploads are)."""
        return {
            "object": "file",
            "id": self.id,
            "purpose": self.purpose,
            "filename": self.filename,
            "bytes": len(self.content),
            "created_at": self.created_at,
            "expires_at": epoch(self.expires_at),
            "status": "processed",
            "status_details": None,
        }


def create_file(fake, form, uploads):
    """POST /v1/files (multipart): `form` holds the text fields, `uploads` the file parts."""
    for name in list(form) + list(uploads):
        if name not in UPLOAD_FIELDS:
            raise bad_request(f"Unrecognized request argument supplied: {name}")
    upload = uploads.get("file")
    if upload is None:
        if "file" in form:
            raise bad_request("Invalid 'file': expected a file upload with a filename.", param="file")
        raise missing_param("file")
    purpose = form.get("purpose")
    if not purpose:
        raise missing_param("purpose")
    if purpose not in UPLOAD_PURPOSES:
        choices = ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
        raise bad_request(f"'{purpose}' is not one of [{choices}] - 'purpose'", param="purpose")
    now = fake.now()
    expires_at = _expires_at(form, now, purpose)
    stored = StoredFile(upload.filename, purpose, upload.read(), now, expires_at)
    fake.files[stored.id] = stored
    return stored.to_api()


def _expires_at(form, now, purpose):
    anchor = form.get("expires_after[anchor]")
    seconds = form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return int(now) + BATCH_EXPIRY_SECONDS if purpose == "batch" else None
    if anchor != "created_at":
        raise bad_request(
            f"Invalid value: '{anchor}'. Supported values are: 'created_at'.",
            param="expires_after.anchor",
            code="invalid_value",
        )
    low, high = EXPIRY_RANGE
    if seconds is None or not seconds.isdigit() or not low <= int(seconds) <= high:
        raise bad_request(
            f"Invalid 'expires_after.seconds': expected an integer from {low} to {high}.",
            param="expires_after.seconds",
        )
    return int(now) + int(seconds)


def find_file(fake, file_id):
    """The stored file with this id, or the 404 OpenAI answers."""
    stored = fake.files.get(file_id)
    if stored is None:
        raise ApiError(404, f"No such File object: {file_id}", param="id")
    return stored


def list_files(fake, args):
    """GET /v1/files: `purpose`, `limit` (1-10000, default 10000), `order` (default desc), `after`."""
    params = parse_list_params(args, allow_before=False, max_limit=10000, default_limit=10000)
    del params["before"]
    purpose = args.get("purpose")
    items = [f.to_api() for f in fake.files.values() if purpose is None or f.purpose == purpose]
    return list_body(*paginate(items, **params))


def get_file(fake, file_id):
    """GET /v1/files/{id}."""
    return find_file(fake, file_id).to_api()


def delete_file(fake, file_id):
    """DELETE /v1/files/{id}: the file leaves every vector store too."""
    find_file(fake, file_id)
    del fake.files[file_id]
    for store in fake.vector_stores.values():
        store.files.pop(file_id, None)
    return {"id": file_id, "object": "file", "deleted": True}


def file_content(fake, file_id):
    """GET /v1/files/{id}/content: the bytes, or a 400 for purposes OpenAI will not hand back."""
    stored = find_file(fake, file_id)
    if stored.purpose not in DOWNLOADABLE:
        raise bad_request(f"Not allowed to download files of purpose: {stored.purpose}")
    return stored.content


def require_file(fake, file_id, param):
    """The stored file a request names in `param` (a 404 if there is none)."""
    if not isinstance(file_id, str):
        raise bad_request(f"Invalid '{param}': expected a string.", param=param, code="invalid_type")
    if file_id not in fake.files:
        raise not_found(f"No such File object: {file_id}")
    return fake.files[file_id]

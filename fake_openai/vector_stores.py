"""Vector stores: files indexed over time, and a lexical search. Every function expects `fake.lock` to be held.

A file added to a store is `in_progress` for the `file_processing_seconds` knob (or the
`[fake processing=<seconds>]` directive in its content), then `completed`, or `failed`
when its content is empty (`invalid_file`), not UTF-8 or holds `[fake unsupported]`
(`unsupported_file`). Chunks are paragraphs (auto) or word windows (static).
"""

import re

from . import lexical
from .errors import ApiError, bad_request, check_known_params, invalid_type, invalid_value, missing_param
from .files import require_file
from .listing import list_body, paginate, parse_list_params
from .state import epoch, hex_id

STORE_PARAMS = {"name", "description", "file_ids", "chunking_strategy", "expires_after", "metadata"}
UPDATE_PARAMS = {"name", "expires_after", "metadata"}
FILE_PARAMS = {"file_id", "attributes", "chunking_strategy"}
SEARCH_PARAMS = {"query", "max_num_results", "filters", "ranking_options", "rewrite_query"}
FILE_STATUSES = ("in_progress", "completed", "failed", "cancelled")
MAX_FILE_IDS = 500
MAX_ATTRIBUTES = 16
AUTO_STRATEGY = {
    "type": "static",
    "static": {"max_chunk_size_tokens": lexical.AUTO_CHUNK_WORDS, "chunk_overlap_tokens": lexical.AUTO_OVERLAP_WORDS},
}
COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "nin")
UNSUPPORTED_MARK = "[fake unsupported]"
_PROCESSING = re.compile(r"\[fake processing=(\d+(?:\.\d+)?)\]")
_DIRECTIVE = re.compile(r"\[fake [^\]]*\]")


class StoreFile:
    """A file in one vector store: when its processing ends, how, and its chunks."""

    def __init__(self, store_id, stored, now, processing_seconds, attributes, strategy):
        self.id = stored.id
        self.filename = stored.filename
        self.store_id = store_id
        self.created_at = int(now)
        self.attributes = attributes
        self.strategy = strategy
        text = stored.text()
        delay = _PROCESSING.search(text or "")
        self.ready_at = now + (float(delay.group(1)) if delay else processing_seconds)
        self.error = _processing_error(text)
        self.chunks = [] if self.error else _chunks(_DIRECTIVE.sub(" ", text), strategy)
        self.terms = [lexical.terms(piece) for piece in self.chunks]
        self.size = 0 if self.error else len(text.encode("utf-8"))

    def status(self, now):
        """`in_progress` until ready, then `completed` or `failed`."""
        if now < self.ready_at:
            return "in_progress"
        return "failed" if self.error else "completed"

    def to_api(self, now):
        """The OpenAI `vector_store.file` object."""
        status = self.status(now)
        return {
            "id": self.id,
            "object": "vector_store.file",
            "usage_bytes": self.size if status == "completed" else 0,
            "created_at": self.created_at,
            "vector_store_id": self.store_id,
            "status": status,
            "last_error": self.error if status == "failed" else None,
            "chunking_strategy": self.strategy or AUTO_STRATEGY,
            "attributes": self.attributes,
        }


def _processing_error(text):
    if text is None:
        return {"code": "unsupported_file", "message": "The file type is not supported."}
    if UNSUPPORTED_MARK in text:
        return {"code": "unsupported_file", "message": "The file type is not supported."}
    if not _DIRECTIVE.sub(" ", text).strip():
        return {"code": "invalid_file", "message": "The file could not be parsed because it is empty."}
    return None


def _chunks(text, strategy):
    if strategy is None:
        return lexical.chunk(text)
    static = strategy["static"]
    return lexical.chunk(text, static["max_chunk_size_tokens"], static["chunk_overlap_tokens"])


class VectorStore:
    """A vector store: its files (oldest first) and the times OpenAI shows."""

    def __init__(self, now, name=None, description=None, metadata=None, expires_after=None):
        self.id = hex_id("vs_", 16)
        self.created_at = int(now)
        self.name = name
        self.description = description
        self.metadata = metadata or {}
        self.expires_after = expires_after
        self.last_active_at = int(now)
        self.files = {}

    @property
    def expires_at(self):
        """last_active_at + the expiry days, or None without `expires_after`."""
        if self.expires_after is None:
            return None
        return self.last_active_at + self.expires_after["days"] * 86400

    def status(self, now):
        """`expired`, `in_progress` while a file is, else `completed`."""
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        if any(f.status(now) == "in_progress" for f in self.files.values()):
            return "in_progress"
        return "completed"

    def file_counts(self, now):
        """How many files are in each status, and in all."""
        counts = dict.fromkeys(FILE_STATUSES, 0)
        for stored in self.files.values():
            counts[stored.status(now)] += 1
        return {**counts, "total": len(self.files)}

    def to_api(self, now):
        """The OpenAI `vector_store` object."""
        return {
            "id": self.id,
            "object": "vector_store",
            "created_at": self.created_at,
            "name": self.name,
            "description": self.description,
            "usage_bytes": sum(f.size for f in self.files.values() if f.status(now) == "completed"),
            "file_counts": self.file_counts(now),
            "status": self.status(now),
            "expires_after": self.expires_after,
            "expires_at": epoch(self.expires_at),
            "last_active_at": self.last_active_at,
            "metadata": dict(self.metadata),
        }


def add_file(fake, store, stored, attributes=None, strategy=None):
    """Put an uploaded file into a store (lock held); adding it again returns the file already there."""
    if stored.id not in store.files:
        store.files[stored.id] = StoreFile(
            store.id, stored, fake.now(), fake.config.file_processing_seconds, attributes or {}, strategy
        )
    return store.files[stored.id]


def new_store(fake, file_ids=(), strategy=None, **fields):
    """Create and register a store holding these (already checked) files."""
    store = VectorStore(fake.now(), **fields)
    fake.vector_stores[store.id] = store
    for file_id in file_ids:
        add_file(fake, store, fake.files[file_id], strategy=strategy)
    return store


def find_store(fake, store_id):
    """The store with this id, or a 404."""
    store = fake.vector_stores.get(store_id)
    if store is None:
        raise ApiError(404, f"No vector store found with id '{store_id}'.", param="vector_store_id")
    return store


def _find_store_file(fake, store_id, file_id):
    store = find_store(fake, store_id)
    found = store.files.get(file_id)
    if found is None:
        raise ApiError(404, f"No file found with id '{file_id}' in vector store '{store_id}'.", param="file_id")
    return store, found


def chunking_strategy(value):
    """None for auto, or the validated static strategy."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("chunking_strategy", "an object", value)
    kind = value.get("type")
    if kind == "auto":
        return None
    if kind != "static":
        raise invalid_value("chunking_strategy.type", kind, ("auto", "static"))
    static = value.get("static")
    if not isinstance(static, dict):
        raise missing_param("chunking_strategy.static")
    size = static.get("max_chunk_size_tokens")
    overlap = static.get("chunk_overlap_tokens")
    if not isinstance(size, int) or isinstance(size, bool) or not 100 <= size <= 4096:
        raise bad_request(
            "Invalid 'chunking_strategy.static.max_chunk_size_tokens': expected an integer from 100 to 4096.",
            param="chunking_strategy.static.max_chunk_size_tokens",
        )
    if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap <= size // 2:
        raise bad_request(
            "Invalid 'chunking_strategy.static.chunk_overlap_tokens': "
            "expected an integer from 0 to half of max_chunk_size_tokens.",
            param="chunking_strategy.static.chunk_overlap_tokens",
        )
    return {"type": "static", "static": {"max_chunk_size_tokens": size, "chunk_overlap_tokens": overlap}}


def _expires_after(value):
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type("expires_after", "an object", value)
    if value.get("anchor") != "last_active_at":
        raise invalid_value("expires_after.anchor", value.get("anchor"), ("last_active_at",))
    days = value.get("days")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= 365:
        raise bad_request(
            "Invalid 'expires_after.days': expected an integer from 1 to 365.", param="expires_after.days"
        )
    return {"anchor": "last_active_at", "days": days}


def _metadata(body):
    metadata = body.get("metadata")
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise invalid_type("metadata", "an object", metadata)
    return metadata


def _optional_string(body, name):
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid_type(name, "a string", value)
    return value


def _attributes(value):
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid_type("attributes", "an object", value)
    if len(value) > MAX_ATTRIBUTES:
        raise bad_request(
            f"Invalid 'attributes': at most {MAX_ATTRIBUTES} key-value pairs.",
            param="attributes",
            code="object_above_max_properties",
        )
    for key, item in value.items():
        if not isinstance(item, (str, int, float, bool)):
            raise invalid_type(f"attributes.{key}", "a string, number or boolean", item)
    return value


def check_file_ids(fake, file_ids, param="file_ids", limit=MAX_FILE_IDS):
    """Validate a list of file ids: an array of at most `limit` known files."""
    if not isinstance(file_ids, list):
        raise invalid_type(param, "an array", file_ids)
    if len(file_ids) > limit:
        raise bad_request(
            f"Invalid '{param}': array too long. Expected an array with maximum length {limit}, "
            f"but got an array with length {len(file_ids)} instead.",
            param=param,
            code="array_above_max_length",
        )
    for index, file_id in enumerate(file_ids):
        require_file(fake, file_id, f"{param}[{index}]")
    return list(file_ids)


def create_store(fake, body):
    """POST /v1/vector_stores."""
    check_known_params(body, STORE_PARAMS)
    fields = {
        "name": _optional_string(body, "name"),
        "description": _optional_string(body, "description"),
        "metadata": _metadata(body),
        "expires_after": _expires_after(body.get("expires_after")),
    }
    strategy = chunking_strategy(body.get("chunking_strategy"))
    file_ids = check_file_ids(fake, body.get("file_ids") or [])
    return new_store(fake, file_ids, strategy, **fields).to_api(fake.now())


def update_store(fake, store_id, body):
    """POST /v1/vector_stores/{id}: name, expires_after, metadata."""
    check_known_params(body, UPDATE_PARAMS)
    store = find_store(fake, store_id)
    if "name" in body:
        store.name = _optional_string(body, "name")
    if "expires_after" in body:
        store.expires_after = _expires_after(body["expires_after"])
    if "metadata" in body:
        store.metadata = _metadata(body)
    return store.to_api(fake.now())


def list_stores(fake, args):
    """GET /v1/vector_stores."""
    now = fake.now()
    items = [store.to_api(now) for store in fake.vector_stores.values()]
    return list_body(*paginate(items, **parse_list_params(args)))


def get_store(fake, store_id):
    """GET /v1/vector_stores/{id}."""
    return find_store(fake, store_id).to_api(fake.now())


def delete_store(fake, store_id):
    """DELETE /v1/vector_stores/{id} (its files stay in the Files API)."""
    find_store(fake, store_id)
    del fake.vector_stores[store_id]
    return {"id": store_id, "object": "vector_store.deleted", "deleted": True}


def create_store_file(fake, store_id, body):
    """POST /v1/vector_stores/{id}/files."""
    check_known_params(body, FILE_PARAMS)
    store = find_store(fake, store_id)
    if "file_id" not in body:
        raise missing_param("file_id")
    stored = require_file(fake, body["file_id"], "file_id")
    attributes = _attributes(body.get("attributes"))
    strategy = chunking_strategy(body.get("chunking_strategy"))
    return add_file(fake, store, stored, attributes, strategy).to_api(fake.now())


def list_store_files(fake, store_id, args):
    """GET /v1/vector_stores/{id}/files: limit, order, after, before, filter (a status)."""
    params = parse_list_params(args)
    wanted = args.get("filter")
    if wanted is not None and wanted not in FILE_STATUSES:
        raise invalid_value("filter", wanted, FILE_STATUSES)
    store = find_store(fake, store_id)
    now = fake.now()
    items = [f.to_api(now) for f in store.files.values()]
    items = [item for item in items if wanted is None or item["status"] == wanted]
    return list_body(*paginate(items, **params))


def get_store_file(fake, store_id, file_id):
    """GET /v1/vector_stores/{id}/files/{file_id}."""
    return _find_store_file(fake, store_id, file_id)[1].to_api(fake.now())


def delete_store_file(fake, store_id, file_id):
    """DELETE /v1/vector_stores/{id}/files/{file_id} (the file itself stays)."""
    store, _ = _find_store_file(fake, store_id, file_id)
    del store.files[file_id]
    return {"id": file_id, "object": "vector_store.file.deleted", "deleted": True}


def search(fake, stores, queries, max_results, score_threshold=0.0, filters=None):
    """The best chunks of the stores' completed files for `queries`: [(score, StoreFile, chunk text)].

    Chunks that share no term with any query are left out; ties keep store, file and chunk order.
    """
    now = fake.now()
    candidates, seen = [], set()
    for store in stores:
        store.last_active_at = int(now)
        for stored in store.files.values():
            if stored.status(now) != "completed" or not _matches(filters, stored.attributes):
                continue
            for index, text in enumerate(stored.chunks):
                if (stored.id, index) not in seen:
                    seen.add((stored.id, index))
                    candidates.append((stored, text, stored.terms[index]))
    scores = lexical.score_all(queries, [terms for _, _, terms in candidates])
    ranked = [
        (score, stored, text)
        for score, (stored, text, _) in zip(scores, candidates, strict=True)
        if score > 0 and score >= score_threshold
    ]
    ranked.sort(key=lambda hit: -hit[0])
    return ranked[:max_results]


def _matches(filters, attributes):
    """Whether a file's attributes pass a comparison or compound filter (None passes all)."""
    if filters is None:
        return True
    kind = filters["type"]
    if kind in ("and", "or"):
        results = [_matches(part, attributes) for part in filters["filters"]]
        return all(results) if kind == "and" else any(results)
    actual, value = attributes.get(filters["key"]), filters["value"]
    if kind in ("in", "nin"):
        return (actual in value) == (kind == "in")
    if kind in ("eq", "ne"):
        return (actual == value) == (kind == "eq")
    if actual is None or isinstance(actual, str) != isinstance(value, str):
        return False
    return {"gt": actual > value, "gte": actual >= value, "lt": actual < value, "lte": actual <= value}[kind]


def check_filters(value, param="filters"):
    """Validate a comparison filter `{type, key, value}` or a compound `{type: and|or, filters}`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    kind = value.get("type")
    if kind in ("and", "or"):
        parts = value.get("filters")
        if not isinstance(parts, list):
            raise invalid_type(f"{param}.filters", "an array", parts)
        for index, part in enumerate(parts):
            check_filters(part, f"{param}.filters[{index}]")
        return value
    if kind not in COMPARISONS:
        raise invalid_value(f"{param}.type", kind, COMPARISONS + ("and", "or"))
    if not isinstance(value.get("key"), str):
        raise missing_param(f"{param}.key")
    if "value" not in value:
        raise missing_param(f"{param}.value")
    if kind in ("in", "nin") and not isinstance(value["value"], list):
        raise invalid_type(f"{param}.value", "an array", value["value"])
    return value


def _queries(value):
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(q, str) for q in value):
        return list(value)
    raise invalid_type("query", "a string or an array of strings", value)


def score_threshold(ranking_options, param="ranking_options"):
    """The `score_threshold` (0..1, default 0) of `ranking_options`."""
    if ranking_options is None:
        return 0.0
    if not isinstance(ranking_options, dict):
        raise invalid_type(param, "an object", ranking_options)
    threshold = ranking_options.get("score_threshold", 0.0)
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold <= 1:
        raise bad_request(
            f"Invalid '{param}.score_threshold': expected a number from 0 to 1.", param=f"{param}.score_threshold"
        )
    return float(threshold)


def max_results(value, param, default):
    """A `max_num_results` (1-50), or `default` when absent."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 50:
        raise bad_request(f"Invalid '{param}': expected an integer from 1 to 50.", param=param)
    return value


def search_store(fake, store_id, body):
    """POST /v1/vector_stores/{id}/search."""
    check_known_params(body, SEARCH_PARAMS)
    store = find_store(fake, store_id)
    if "query" not in body:
        raise missing_param("query")
    queries = _queries(body["query"])
    limit = max_results(body.get("max_num_results"), "max_num_results", 10)
    threshold = score_threshold(body.get("ranking_options"))
    filters = check_filters(body.get("filters"))
    hits = search(fake, [store], queries, limit, threshold, filters)
    return {
        "object": "vector_store.search_results.page",
        "search_query": queries,
        "data": [
            {
                "file_id": stored.id,
                "filename": stored.filename,
                "score": score,
                "attributes": stored.attributes,
                "content": [{"type": "text", "text": text}],
            }
            for score, stored, text in hits
        ],
        "has_more": False,
        "next_page": None,
    }

"""file_search for the fake's model: one search per answering turn, the call it shows, and its citations.

The model searches with the latest user text (directives removed) as its only query,
over completed files only, and quotes the best chunk of each of the first two files it
finds: `... | file_search -> <chunk>. <chunk>.` at the end of its reply. Responses cite
each quote with `{type: "file_citation", file_id, filename, index}`, `index` being the
offset just before the quote's final period (no marker in the text); Assistants keep a
marker `【4:<result index>†<filename>】` there, cited by `{type, text, start_index,
end_index, file_citation: {file_id}}`. Every function expects `fake.lock` to be held.
"""

from . import events, scripting, vector_stores
from .errors import bad_request, check_known_params, invalid_type, invalid_value, missing_param
from .state import hex_id

MARKER = "【4:{index}†{filename}】"
MAX_QUOTES = 2
DEFAULT_MAX_RESULTS = 20
RESPONSES_RANKERS = ("auto", "default-2024-11-15")
ASSISTANTS_RANKERS = ("auto", "default_2024_08_21")
INCLUDE_RESULTS = "file_search_call.results"
TOOL_PARAMS = {"type", "vector_store_ids", "max_num_results", "filters", "ranking_options"}
RANKING_PARAMS = {"ranker", "score_threshold", "hybrid_search"}


class Search:
    """One file_search call over some stores: its query, its hits, and the quotes an answer makes of them."""

    def __init__(self, fake, store_ids, max_results, threshold, filters=None):
        self.fake = fake
        self.store_ids = list(store_ids)
        self.max_results = max_results
        self.threshold = threshold
        self.filters = filters
        self.query = None
        self.hits = []  # [(score, StoreFile, chunk text)], best first

    def run(self, query):
        """Search the stores that still exist with `query`."""
        stores = [self.fake.vector_stores[i] for i in self.store_ids if i in self.fake.vector_stores]
        self.query = query
        self.hits = vector_stores.search(self.fake, stores, [query], self.max_results, self.threshold, self.filters)

    def quotes(self):
        """[(result index, StoreFile, sentence)]: the best chunk of each of the first MAX_QUOTES files."""
        seen, quotes = set(), []
        for index, (_, stored, text) in enumerate(self.hits):
            if stored.id not in seen and len(quotes) < MAX_QUOTES:
                seen.add(stored.id)
                quotes.append((index, stored, text.rstrip(" .!?;:,")))
        return quotes

    def answer(self, markers):
        """The quoting answer ("<a>. <b>.") and per quote (offset of its citation point, marker, StoreFile)."""
        parts, cites, position = [], [], 0
        for index, stored, sentence in self.quotes():
            marker = MARKER.format(index=index, filename=stored.filename) if markers else ""
            if parts:
                position += 1
            cites.append((position + len(sentence), marker, stored))
            parts.append(f"{sentence}{marker}.")
            position += len(sentence) + len(marker) + 1
        return " ".join(parts), cites

    def input_tokens(self):
        """The tokens the retrieved chunks add to the model's input."""
        return sum(scripting.count_tokens(text) for _, _, text in self.hits)


def results(search, markers=False):
    """The `[("file_search", answer)]` a reply ends with, or [] when the search found nothing (or never ran)."""
    if search is None or not search.hits:
        return []
    return [("file_search", search.answer(markers)[0])]


def _cites(search, reply, markers):
    """(offset in `reply`, marker, StoreFile) per citation of the answer that ends `reply`."""
    if search is None or not search.hits:
        return []
    answer, cites = search.answer(markers)
    base = len(reply) - len(answer)
    return [(base + offset, marker, stored) for offset, marker, stored in cites]


def output_text_annotations(search, reply):
    """The Responses `file_citation` annotations of a reply (no marker in the text)."""
    return [
        {"type": "file_citation", "file_id": stored.id, "filename": stored.filename, "index": offset}
        for offset, _, stored in _cites(search, reply, markers=False)
    ]


def message_annotations(search, reply):
    """The Assistants `file_citation` annotations of a reply that keeps its markers."""
    return [
        {
            "type": "file_citation",
            "text": marker,
            "start_index": offset,
            "end_index": offset + len(marker),
            "file_citation": {"file_id": stored.id},
        }
        for offset, marker, stored in _cites(search, reply, markers=True)
    ]


def add_usage(search, usage, input_key):
    """Count the retrieved chunks as input tokens of `usage` (when the search ran and usage is set)."""
    if search is None or usage is None or search.query is None:
        return
    extra = search.input_tokens()
    usage[input_key] += extra
    usage["total_tokens"] += extra


def _ranking(value, param, rankers, default_ranker):
    if value is None:
        return {"ranker": default_ranker, "score_threshold": 0.0}
    if not isinstance(value, dict):
        raise invalid_type(param, "an object", value)
    check_known_params(value, RANKING_PARAMS)
    ranker = value.get("ranker", default_ranker)
    if ranker not in rankers:
        raise invalid_value(f"{param}.ranker", ranker, rankers)
    return {"ranker": ranker, "score_threshold": vector_stores.score_threshold(value, param)}


# --- Responses ---------------------------------------------------------------------------------


class ResponseSearch(Search):
    """The file_search tool of one response: the `file_search_call` output item and its events."""

    def __init__(self, fake, tool, with_results):
        threshold = tool["ranking_options"]["score_threshold"]
        super().__init__(fake, tool["vector_store_ids"], tool["max_num_results"], threshold, tool["filters"])
        self.with_results = with_results
        self.item = None

    def start(self, response, query):
        """Search, and log the call's events as output item 0 of the response."""
        self.run(query)
        self.item = {
            "id": hex_id("fs_"),
            "type": "file_search_call",
            "status": "completed",
            "queries": [query],
            "results": self._results() if self.with_results else None,
        }
        events.log(
            response,
            "response.output_item.added",
            output_index=0,
            item={**self.item, "status": "in_progress", "queries": [], "results": None},
        )
        for phase in ("in_progress", "searching", "completed"):
            events.log(response, f"response.file_search_call.{phase}", item_id=self.item["id"], output_index=0)
        events.log(response, "response.output_item.done", output_index=0, item=self.item)

    def _results(self):
        return [
            {
                "file_id": stored.id,
                "filename": stored.filename,
                "score": score,
                "text": text,
                "attributes": stored.attributes,
            }
            for score, stored, text in self.hits
        ]

    def output(self):
        """The output items the search adds before the message ([] until it ran)."""
        return [self.item] if self.item else []


def response_search(fake, body):
    """The body's file_search tool as a ResponseSearch (None without one); the tool echo gets its defaults.

    Checks run before anything is created: the stores must exist, at most one file_search tool.
    """
    tools = body.get("tools")
    if not isinstance(tools, list):
        return None
    found = [index for index, tool in enumerate(tools) if isinstance(tool, dict) and tool.get("type") == "file_search"]
    if not found:
        return None
    if len(found) > 1:
        raise bad_request("the fake supports one file_search tool per request", param="tools")
    index = found[0]
    tool, param = tools[index], f"tools[{index}]"
    check_known_params(tool, TOOL_PARAMS)
    store_ids = tool.get("vector_store_ids")
    if store_ids is None:
        raise missing_param(f"{param}.vector_store_ids")
    if not isinstance(store_ids, list) or not all(isinstance(i, str) for i in store_ids):
        raise invalid_type(f"{param}.vector_store_ids", "an array of strings", store_ids)
    for store_id in store_ids:
        vector_stores.find_store(fake, store_id)
    echo = {
        "type": "file_search",
        "filters": vector_stores.check_filters(tool.get("filters"), f"{param}.filters"),
        "max_num_results": vector_stores.max_results(
            tool.get("max_num_results"), f"{param}.max_num_results", DEFAULT_MAX_RESULTS
        ),
        "ranking_options": _ranking(tool.get("ranking_options"), f"{param}.ranking_options", RESPONSES_RANKERS, "auto"),
        "vector_store_ids": list(store_ids),
    }
    tools[index] = echo
    include = body.get("include") or []
    return ResponseSearch(fake, echo, isinstance(include, list) and INCLUDE_RESULTS in include)


# --- Assistants --------------------------------------------------------------------------------


class RunSearch(Search):
    """The file_search of an Assistants run: the assistant's and the thread's stores."""

    def __init__(self, fake, store_ids, max_results, ranking):
        super().__init__(fake, store_ids, max_results, ranking["score_threshold"])
        self.ranking = {"ranker": "default_2024_08_21", "score_threshold": ranking["score_threshold"]}

    def tool_call(self, call_id):
        """The run step's `file_search` tool call, results with their content (stripped on the way out)."""
        return {
            "id": call_id,
            "type": "file_search",
            "file_search": {
                "ranking_options": dict(self.ranking),
                "results": [
                    {
                        "file_id": stored.id,
                        "file_name": stored.filename,
                        "score": score,
                        "attributes": stored.attributes,
                        "content": [{"type": "text", "text": text}],
                    }
                    for score, stored, text in self.hits
                ],
            },
        }


def run_tools(fake, assistant_id, body):
    """A run's tools: the body's, else the assistant's (set through /_fake/assistants)."""
    if body.get("tools") is not None:
        return body["tools"]
    return list(fake.assistants.get(assistant_id, {}).get("tools", []))


def run_search(fake, assistant_id, thread, tools):
    """The RunSearch of a new run, or None when it has no file_search tool and no thread store.

    Stores: the assistant's `tool_resources.file_search.vector_store_ids`, then the thread's.
    """
    tool = next((t for t in tools if isinstance(t, dict) and t.get("type") == "file_search"), None)
    thread_store = getattr(thread, "vector_store_id", None)
    if tool is None and thread_store is None:
        return None
    config = (tool or {}).get("file_search") or {}
    if not isinstance(config, dict):
        raise invalid_type("tools.file_search", "an object", config)
    max_results = vector_stores.max_results(
        config.get("max_num_results"), "tools.file_search.max_num_results", DEFAULT_MAX_RESULTS
    )
    ranking = _ranking(
        config.get("ranking_options"), "tools.file_search.ranking_options", ASSISTANTS_RANKERS, "default_2024_08_21"
    )
    resources = fake.assistants.get(assistant_id, {}).get("tool_resources") or {}
    store_ids = list((resources.get("file_search") or {}).get("vector_store_ids") or [])
    if thread_store is not None:
        store_ids.append(thread_store)
    return RunSearch(fake, store_ids, max_results, ranking)


def set_assistant(fake, assistant_id, body):
    """POST /_fake/assistants/{id}: the `tools` and `tool_resources` the fake's assistant has (no check of stores)."""
    check_known_params(body, {"tools", "tool_resources"})
    tools = body.get("tools") or []
    resources = body.get("tool_resources") or {}
    if not isinstance(tools, list):
        raise invalid_type("tools", "an array", tools)
    if not isinstance(resources, dict):
        raise invalid_type("tool_resources", "an object", resources)
    fake.assistants[assistant_id] = {"tools": tools, "tool_resources": resources}
    return get_assistant(fake, assistant_id)


def get_assistant(fake, assistant_id):
    """GET /_fake/assistants/{id}: what the fake knows of an assistant (nothing: no tools)."""
    known = fake.assistants.get(assistant_id, {"tools": [], "tool_resources": {}})
    return {"id": assistant_id, **known}

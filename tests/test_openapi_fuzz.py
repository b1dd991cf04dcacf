"""The OpenAPI document: served without credentials, covers every route, and the live app conforms
to it under schemathesis (no 5xx; every answer's status, content type, headers and body as documented)."""

from __future__ import annotations

import random

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from app.api.openapi import load_document
from tests.helpers import TOKENS

CONFORMANCE = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
NEGATIVE = [not_a_server_error, negative_data_rejection]
# Operations that must answer 200 to some generated request under each prefix.
REACHED = [
    ("POST", "/threads"),
    ("GET", "/threads/{thread_id}"),
    ("POST", "/threads/{thread_id}/messages"),
    ("GET", "/threads/{thread_id}/messages"),
    ("POST", "/threads/{thread_id}/runs"),
    ("GET", "/threads/{thread_id}/runs/{run_id}"),
    ("GET", "/threads"),
    ("POST", "/threads/{thread_id}"),
    ("GET", "/threads/{thread_id}/messages/{message_id}"),
    ("POST", "/threads/{thread_id}/messages/{message_id}"),
]
# Bounded and repeatable: the same examples on every run, no shrinking, no example database.
FUZZ = settings(
    max_examples=20,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
# The caller of the operation being fuzzed (set per operation: see `_user`).
AUTH = {}


def _user(operation) -> str:
    """Who calls the operation. The fuzzer repeats its examples under every prefix, Idempotency-Keys
    included; /v1 speaks as another user, so that a key a legacy route stored does not make its twin a 422."""
    return "bob" if operation.path.startswith("/v1/") else "alice"


@pytest.fixture(scope="module", autouse=True)
def hypothesis_home(tmp_path_factory):
    """Keep Hypothesis's own files out of the work tree."""
    set_hypothesis_home_dir(tmp_path_factory.mktemp("hypothesis"))
    yield
    set_hypothesis_home_dir(None)


def _flask_routes(app) -> set[tuple[str, str]]:
    """(method, OpenAPI-style path) of every route the app serves, with the type routes generalised."""
    routes = set()
    types = {t.name for t in app.extensions["services"].settings.assistant_types}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for name in types:
            path = path.replace(f"/api/assistants/{name}/", "/api/assistants/{assistant_type}/")
        routes |= {(method.lower(), path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routes


def test_the_document_covers_every_route_and_only_those(app):
    document = load_document()
    assert document["openapi"].startswith("3.1")
    paths = document["paths"]
    documented = {(method, path) for path, item in paths.items() for method in item if method != "parameters"}
    assert documented == _flask_routes(app)
    bearer = document["components"]["securitySchemes"]["bearer"]
    assert (bearer["type"], bearer["scheme"]) == ("http", "bearer")
    assert document["security"] == [{"bearer": []}]
    public = {path for path, item in document["paths"].items() if item.get("get", {}).get("security") == []}
    assert public == {"/healthz", "/readyz", "/metrics", "/openapi.json"}
    for name in ("Thread", "Message", "Run", "MessageList", "Error"):
        assert name in document["components"]["schemas"]


def test_the_document_is_served_without_credentials_with_the_configured_types(app):
    answer = app.test_client().get("/openapi.json")
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    served = answer.json
    assert served["paths"].keys() == load_document()["paths"].keys()
    assert served["components"]["parameters"]["AssistantType"]["schema"]["enum"] == ["curator", "tutor"]


def _known_objects(api):
    """A thread with a message and a finished run, and a spare thread with a message that DELETE may take."""
    thread = api.new_thread()
    message = api.say(thread, "hello")["id"]
    run = api.run(thread)
    assert run.status_code == 200, run.json
    spare = api.new_thread()
    spare_message = api.say(spare, "spare")["id"]
    known = {"thread_id": thread, "run_id": run.json["id"], "message_id": message}
    return known, {"thread_id": spare, "message_id": spare_message}


def _fuzz(operation, strategy, base_url, checks, succeeded: set) -> list[str]:
    """Run `checks` on the answers to the strategy's cases; the failures, as text.

    The labels of operations that answered 200 at least once go into `succeeded`."""

    @FUZZ
    @given(case=strategy)
    def check(case):
        # Hypothesis seeds the global `random` alike for every example; the in-process fake draws its
        # Assistants IDs from it, and would hand out the same thread ID twice.
        random.seed()
        response = case.call_and_validate(base_url=base_url, headers=AUTH, checks=checks)
        if response.status_code == 200:
            succeeded.add(operation.label)

    try:
        check()
    except Exception as failure:  # every kind of check failure is reported, not only the first operation's
        return [f"{operation.label}: {failure}"]
    return []


def test_the_live_app_conforms_to_its_document(live_server, api):
    schema = schemathesis.openapi.from_url(f"{live_server.url}/openapi.json")
    objects = {user: _known_objects(api.as_user(user)) for user in ("alice", "bob")}
    operations = [result.ok() for result in schema.get_all_operations()]
    operations.sort(key=lambda op: op.method.upper() == "DELETE")  # DELETE last: it takes the known thread away
    failures, succeeded = [], set()
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        known, spare = objects[_user(operation)]
        AUTH["Authorization"] = f"Bearer {TOKENS[_user(operation)]}"
        given_ids = {k: v for k, v in (spare if operation.method.upper() == "DELETE" else known).items() if k in names}
        if "assistant_type" in names:
            given_ids["assistant_type"] = "curator"
        positive = operation.as_strategy(GenerationMode.POSITIVE)
        if given_ids:
            positive = st.one_of(positive, operation.as_strategy(GenerationMode.POSITIVE, path_parameters=given_ids))
        failures += _fuzz(operation, positive, live_server.url, CONFORMANCE, succeeded)
        if any((operation.path_parameters, operation.query, operation.headers, operation.body)):
            negative = operation.as_strategy(GenerationMode.NEGATIVE)
            failures += _fuzz(operation, negative, live_server.url, NEGATIVE, set())
    assert failures == [], "\n\n".join(failures)
    # The fuzzer got past validation and ownership to real answers, not only to 4xx.
    for prefix in ("/api/openai", "/api/assistants/{assistant_type}", "/v1"):
        assert {f"{method} {prefix}{path}" for method, path in REACHED} <= succeeded

"""docs/api.md, the OpenAPI document and the code say the same thing."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from app import create_app
from app.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
API_DOC = ROOT / "docs" / "api.md"
OPENAPI = ROOT / "app" / "api" / "openapi.json"
METHODS = {"get", "post", "put", "patch", "delete"}


def code_outcomes() -> dict[str, tuple[int, str | None]]:
    """The run-status table as the code keeps it, by the doc's row names.

    The only import of the table in this file: if it moves, change this function.
    """
    from app.api.outcomes import CLIENT_ACTION_OUTCOME, FINAL_STATUS_OUTCOMES, TIMEOUT_OUTCOME, UNEXPECTED_OUTCOME

    table = {status: (o.http_status, o.error) for status, o in FINAL_STATUS_OUTCOMES.items()}
    table["requires_action (client tools)"] = (CLIENT_ACTION_OUTCOME.http_status, CLIENT_ACTION_OUTCOME.error)
    table["timeout"] = (TIMEOUT_OUTCOME.http_status, TIMEOUT_OUTCOME.error)
    table["any other"] = (UNEXPECTED_OUTCOME.http_status, UNEXPECTED_OUTCOME.error)
    return table


def doc_table(header: str) -> list[list[str]]:
    """The rows of the table in docs/api.md whose header row starts with `header`, cells stripped."""
    lines = API_DOC.read_text(encoding="utf-8").splitlines()
    for index, line in enumerate(lines):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[: len(header.split("|"))] == [h.strip() for h in header.split("|")]:
            rows = []
            for row in lines[index + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip().strip("`") for c in row.strip().strip("|").split("|")])
            return rows
    raise AssertionError(f"docs/api.md has no table headed {header!r}")


def openapi() -> dict:
    return json.loads(OPENAPI.read_text(encoding="utf-8"))


def openapi_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, ops in openapi()["paths"].items() for method in ops if method in METHODS}


def test_the_route_table_and_openapi_list_the_same_routes():
    documented = {(row[0], row[1]) for row in doc_table("method | path")}
    assert documented == openapi_routes()


def test_openapi_lists_every_route_the_app_serves(tmp_path):
    env = {"OPENAI_BASE_URL": "offline", "AUTH_MODE": "none", "ASSISTANT_CURATOR_MODEL": "gpt-4o"}
    app = create_app(load_settings({**env, "DATABASE_URL": f"sqlite:///{tmp_path}/api.db"}))
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)
        path = path.replace("/api/assistants/curator/", "/api/assistants/{assistant_type}/")
        served |= {(method, path) for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert served == openapi_routes()


def test_the_status_table_is_the_one_the_code_answers_with():
    documented = {row[0]: (int(row[1]), row[2] or None) for row in doc_table("final status | HTTP")}
    assert documented == code_outcomes()


def test_every_status_openapi_answers_with_is_in_the_error_table():
    documented = {int(row[0]) for row in doc_table("HTTP | when")}
    answered = {
        int(code)
        for ops in openapi()["paths"].values()
        for method, op in ops.items()
        if method in METHODS
        for code in op["responses"]
        if code.isdigit()
    }
    assert answered - {200} <= documented
    assert documented - answered <= {405}  # werkzeug's answer for a wrong method, not listed per route


def _header_names(node) -> set[str]:
    names = set()
    if isinstance(node, dict):
        if isinstance(node.get("headers"), dict):
            names |= set(node["headers"])
        if node.get("in") == "header":
            names.add(node["name"])
        for value in node.values():
            names |= _header_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _header_names(value)
    return names


@pytest.mark.parametrize("header", sorted(_header_names(openapi())))
def test_every_header_in_openapi_is_documented(header):
    assert f"`{header}" in API_DOC.read_text(encoding="utf-8")


def test_the_readme_links_nothing_outside_the_repository():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert not re.search(r"(?<![.\w])\.\./", readme), "a path that leaves the repository"
    assert "docs/api.md" in readme and "/openapi.json" in readme

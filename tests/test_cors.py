"""CORS: only the origins in CORS_ORIGINS get CORS headers; preflights pass without credentials."""

from __future__ import annotations

import pytest

from tests.helpers import TOKENS

LEGACY_FRONTEND = "http://localhost:8080"
NOT_LISTED = [
    "http://evil.example",
    "http://localhost:8080.evil.example",
    "http://localhost:8081",
    "https://localhost:8080",
    "null",
]


def _preflight(client, origin, path="/api/openai/threads", method="POST"):
    return client.options(
        path,
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "Authorization, Content-Type, Idempotency-Key",
        },
    )


def _cors_headers(response):
    return {name for name in response.headers.keys() if name.lower().startswith("access-control-")}


PATHS = ["/api/openai/threads", "/api/openai/threads/thread_abc/runs", "/api/assistants/curator/threads"]


@pytest.mark.parametrize("path", PATHS)
def test_preflight_from_a_listed_origin_passes(app, path):
    answer = _preflight(app.test_client(), LEGACY_FRONTEND, path)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == LEGACY_FRONTEND
    allowed_headers = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key"} <= allowed_headers
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]


@pytest.mark.parametrize("origin", NOT_LISTED)
def test_preflight_from_any_other_origin_gets_no_cors_headers(app, origin):
    answer = _preflight(app.test_client(), origin)
    assert _cors_headers(answer) == set()


def test_answers_to_a_listed_origin_expose_the_contract_headers(app):
    client = app.test_client()
    headers = {"Origin": LEGACY_FRONTEND, "Authorization": f"Bearer {TOKENS['alice']}"}
    answer = client.post("/api/openai/threads", json={}, headers=headers)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == LEGACY_FRONTEND
    exposed = {h.strip().lower() for h in answer.headers["Access-Control-Expose-Headers"].split(",")}
    assert {"retry-after", "x-request-id", "openai-poll-after-ms", "x-should-retry"} <= exposed
    # Errors must be readable by the frontend too.
    refused = client.post("/api/openai/threads", json={}, headers={"Origin": LEGACY_FRONTEND})
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == LEGACY_FRONTEND


@pytest.mark.parametrize("origin", NOT_LISTED)
def test_answers_to_other_origins_carry_no_cors_headers(app, origin):
    headers = {"Origin": origin, "Authorization": f"Bearer {TOKENS['alice']}"}
    answer = app.test_client().post("/api/openai/threads", json={}, headers=headers)
    assert answer.status_code == 200
    assert _cors_headers(answer) == set()


def test_cors_origins_lists_several_origins_and_nothing_else(make_app):
    app = make_app(CORS_ORIGINS="https://chat.example.org, http://127.0.0.1:3000")
    client = app.test_client()
    for origin in ("https://chat.example.org", "http://127.0.0.1:3000"):
        answer = _preflight(client, origin)
        assert answer.status_code == 200
        assert answer.headers["Access-Control-Allow-Origin"] == origin
        assert "Origin" in answer.headers["Vary"]  # caches must not hand one origin's answer to another
    for origin in (LEGACY_FRONTEND, "https://chatXexample.org", "https://evil.chat.example.org"):
        assert _cors_headers(_preflight(client, origin)) == set()


def test_requests_without_an_origin_get_no_cors_headers(app):
    client = app.test_client()
    answered = client.post("/api/openai/threads", json={}, headers={"Authorization": f"Bearer {TOKENS['alice']}"})
    refused = client.post("/api/openai/threads", json={})
    assert (answered.status_code, refused.status_code) == (200, 401)
    assert _cors_headers(answered) == _cors_headers(refused) == set()
    assert "Origin" not in answered.headers.get("Vary", "")

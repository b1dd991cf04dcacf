"""Fixtures: the fake upstream as a real local server, a fresh app per test on each engine, and the
PostgreSQL and Redis servers some tests start. Helpers live in tests/helpers.py, servers in harness/servers.py."""

from __future__ import annotations

import shutil

import pytest

from app import create_app
from app.settings import load_settings
from app.store.db import upgrade
from fake_openai import create_fake_app
from harness.servers import PostgresServer, start_redis
from tests.helpers import TOKENS, UPSTREAM_KEY, Api, ServerThread


@pytest.fixture(scope="session")
def fake_server():
    """The fake OpenAI upstream, listening on loopback for the whole session."""
    app = create_fake_app(api_key=UPSTREAM_KEY, default_duration=0.2)
    server = ServerThread(app)
    server.fake = app.fake
    yield server
    server.stop()


@pytest.fixture
def fake(fake_server):
    """The upstream's state, reset for this test."""
    fake_server.fake.reset()
    return fake_server.fake


@pytest.fixture(scope="session")
def migrated_db(tmp_path_factory):
    """A SQLite file with every migration applied, copied by each test."""
    path = tmp_path_factory.mktemp("db") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["responses", "assistants"])
def engine_name(request):
    return request.param


@pytest.fixture
def base_env(engine_name, fake_server, migrated_db, tmp_path):
    """The environment of a test deployment; tests change it before `make_app`."""
    db = tmp_path / "backend.db"
    shutil.copy(migrated_db, db)
    return {
        "OPENAI_API_KEY": UPSTREAM_KEY,
        "OPENAI_BASE_URL": f"{fake_server.url}/v1",
        "OPENAI_ENGINE": engine_name,
        "ASSISTANT_CURATOR_ID": "asst_curator",
        "ASSISTANT_CURATOR_MODEL": "gpt-4o",
        "ASSISTANT_CURATOR_INSTRUCTIONS": "You are a curator. Be brief.",
        "ASSISTANT_TUTOR_ID": "asst_tutor",
        "ASSISTANT_TUTOR_MODEL": "gpt-4o-mini",
        "ASSISTANT_TUTOR_TEMPERATURE": "0.3",
        "AUTH_MODE": "token",
        "API_TOKENS": ",".join(f"{user}:{token}" for user, token in TOKENS.items()),
        "DATABASE_URL": f"sqlite:///{db}",
        "RUN_TIMEOUT_SECONDS": "5",
        "POLL_FIRST_MS": "20",
        "POLL_MAX_MS": "100",
        "UPSTREAM_TIMEOUT_SECONDS": "3",
        # The contract tests start many runs quickly; tests of the limits set their own.
        "RATELIMIT_RUNS": "off",
        "RATELIMIT_DEFAULT": "off",
    }


@pytest.fixture
def make_app(base_env, fake):
    """Build an app from the test environment, with optional overrides."""

    def build(**overrides):
        env = {**base_env, **{k: str(v) for k, v in overrides.items() if v is not None}}
        for key in [k for k, v in overrides.items() if v is None]:
            env.pop(key, None)
        return create_app(load_settings(env))

    return build


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def api(app):
    """Alice's client under the legacy prefix."""
    return Api(app.test_client(), TOKENS["alice"])


@pytest.fixture
def live_server(app):
    """The app itself on a loopback port, for clients that need real HTTP."""
    server = ServerThread(app)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server for the whole session."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """A fresh, migrated database of its own for this test."""
    return postgres_server.new_database()


@pytest.fixture
def redis_url(tmp_path):
    """A throwaway Redis server on a free loopback port, for this test."""
    server, url = start_redis(tmp_path)
    try:
        yield url
    finally:
        server.stop()

"""Fixtures: the fake upstream as a real local server, and a fresh app per test on each engine."""

from __future__ import annotations

import shutil
import threading
import time

import pytest
from werkzeug.serving import make_server

from app import create_app
from app.settings import load_settings
from app.store.db import upgrade
from fake_openai import create_fake_app

UPSTREAM_KEY = "sk-test-upstream-key-0123456789"
TOKENS = {"alice": "alice-token-0001", "bob": "bob-token-0002"}


class ServerThread:
    """A threaded WSGI server on a free loopback port, run in a background thread."""

    def __init__(self, wsgi_app):
        self.server = make_server("127.0.0.1", 0, wsgi_app, threaded=True)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


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


class Api:
    """A test client that speaks as one user under one route prefix."""

    def __init__(self, flask_client, token, prefix="/api/openai"):
        self.client = flask_client
        self.headers = {"Authorization": f"Bearer {token}"}
        self.prefix = prefix

    def as_user(self, user):
        return Api(self.client, TOKENS[user], self.prefix)

    def under(self, prefix):
        return Api(self.client, self.headers["Authorization"].split(" ", 1)[1], prefix)

    def _call(self, method, path, **kwargs):
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return self.client.open(self.prefix + path, method=method, headers=headers, **kwargs)

    def get(self, path, **kwargs):
        return self._call("GET", path, **kwargs)

    def post(self, path, **kwargs):
        return self._call("POST", path, **kwargs)

    def delete(self, path, **kwargs):
        return self._call("DELETE", path, **kwargs)

    def new_thread(self):
        response = self.post("/threads", json={})
        assert response.status_code == 200, response.json
        return response.json["id"]

    def say(self, thread_id, text):
        response = self.post(f"/threads/{thread_id}/messages", json={"role": "user", "content": text})
        assert response.status_code == 200, response.json
        return response.json

    def run(self, thread_id, **body):
        return self.post(f"/threads/{thread_id}/runs", json={"assistant_type": "curator", **body})


def started_run_id(app, thread_id, within=5.0):
    """The run a waiting POST .../runs holds the thread with, once it has been created upstream."""
    records = app.extensions["backend"].records
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        holder = records.active_run(thread_id)
        if holder and not holder.startswith("starting-"):
            return holder
        time.sleep(0.02)
    raise AssertionError(f"no run started on {thread_id} within {within} s")


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

"""The schema at start: a new database is brought to Alembic head (under a lock, so that processes
starting at once do not race), /readyz waits for it, and an unusable DATABASE_URL is one line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.settings import ConfigError
from app.store.db import upgrade
from app.store.schema import head, prepare
from tests.helpers import TOKENS, Api

ROOT = Path(__file__).resolve().parent.parent
# The environment of a started server, offline, with nothing read from a .env.
SERVER_ENV = {
    "PATH": os.environ["PATH"],
    "OPENAI_BASE_URL": "offline",
    "AUTH_MODE": "none",
    "ASSISTANT_CURATOR_MODEL": "gpt-4o",
    "LOG_LEVEL": "warning",
}


@pytest.fixture
def engine_name():
    return "responses"


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def test_a_new_sqlite_file_is_migrated_at_start_and_answers(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'new' / 'backend.db'}"
    app = make_app(DATABASE_URL=url)
    assert _revision(url) == head()
    api = Api(app.test_client(), TOKENS["alice"])
    assert api.post("/threads", json={}).status_code == 200
    assert app.test_client().get("/readyz").status_code == 200


def test_readyz_is_503_while_the_schema_is_behind_and_200_once_migrated(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    app = make_app(DATABASE_URL=url, DATABASE_AUTO_MIGRATE="false")
    client = app.test_client()
    assert _revision(url) is None  # not migrated
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "schema" in ready.json["error"]
    upgrade(url)
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_for_a_database_at_another_revision(make_app, tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(url)
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    engine.dispose()
    app = make_app(DATABASE_URL=url, DATABASE_AUTO_MIGRATE="false")
    assert app.test_client().get("/readyz").status_code == 503
    with pytest.raises(ConfigError, match="^DATABASE_URL: "):
        prepare(url)  # with auto-migrate on, an unknown revision stops the start


def _start(env: dict, code: str = "import wsgi") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**SERVER_ENV, **env}, capture_output=True, text=True, timeout=60
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize(
    "url",
    [
        "not a url",
        "nosuchdb://host/db",
        "mysql://user:secret@localhost/db",  # a known database whose driver is not installed
        "postgresql+psycopg://user:secret@127.0.0.1:{port}/db",  # nothing listens there
    ],
)
def test_an_unusable_database_url_stops_the_start_with_one_line(url):
    started = _start({"DATABASE_URL": url.format(port=_free_port())})
    assert started.returncode == 3, started.stderr
    lines = started.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("configuration error: DATABASE_URL: "), started.stderr
    assert "secret" not in started.stderr


def test_processes_starting_at_once_on_a_new_postgresql_database_all_come_up(postgres_server):  # noqa: F811
    url = postgres_server.new_database(migrated=False)
    # Each process imports the app, says so, and creates it when told: all at once.
    code = (
        "import sys\nfrom app import create_app\nprint('ready', flush=True)\nsys.stdin.readline()\n"
        "app = create_app()\napp.extensions['services'].records.db.dispose()\n"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**SERVER_ENV, "DATABASE_URL": url},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for process in processes:
        assert process.stdout.readline() == "ready\n"
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    errors = [p.communicate(timeout=60)[1] for p in processes]
    assert [p.returncode for p in processes] == [0] * 4, errors
    assert _revision(url) == head()

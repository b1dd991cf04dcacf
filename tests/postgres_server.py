"""A throwaway PostgreSQL server for the tests: initdb into a temporary directory, `postgres` on a
free loopback port, a fresh database per test (copied from a migrated template), all removed at the end.

PostgreSQL refuses to run as root; as root, the server runs as the `postgres` system user
(created by the Debian package) through `runuser`.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest

from app.store.db import upgrade

TEMPLATE = "migrated_template"
START_TIMEOUT_SECONDS = 30


def _bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps them under /usr/lib/postgresql)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: run `bash scripts/setup.sh --servers`")
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; `new_database()` hands out empty databases."""

    def __init__(self):
        self.bin = _bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._started = False
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then `pg_ctl start` until the server accepts connections; then the migrated template."""
        initdb = [
            str(self.bin / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ]
        subprocess.run([*self._as_user, *initdb], check=True, capture_output=True)
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        self._started = True
        log = str(self.root / "server.log")
        self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_SECONDS), "-l", log, "-o", options)
        self._execute(f"CREATE DATABASE {TEMPLATE}")
        upgrade(self.url(TEMPLATE))

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        command = [*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(command, capture_output=True, text=True)
        if check and done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"pg_ctl {args[0]} failed: {done.stderr} {log.read_text() if log.exists() else ''}")

    def _dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={database}"

    def _execute(self, statement: str) -> None:
        with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self, migrated: bool = True) -> str:
        """The URL of a new database: with every migration applied, or empty."""
        name = f"test_{next(self._names)}"
        self._execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE if migrated else 'template0'}")
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (open connections are closed) of the server this object started; remove its files."""
        try:
            if self._started:
                self._pg_ctl("stop", "-m", "fast", "-w", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


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

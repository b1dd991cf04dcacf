"""Storage faults injected for real while gunicorn (the shipped gevent config, two workers) serves under load:
the SQLite file made read-only (chattr +i, which binds root too) and back, deleted and back, its directory
moved away and back, and PostgreSQL stopped and started. Every answer is a 200 or a JSON 503 (never a 500,
never a dead worker), /readyz names the database while it fails, and writes work again after, by themselves."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.api.health import READY_CACHE_SECONDS
from app.store import guard
from app.store.db import upgrade
from harness.servers import children_of, start_fake_upstream, start_gunicorn, wait_until
from tests.helpers import DEPLOY_TOKEN, DEPLOY_UPSTREAM_KEY, TOKENS, Api, call, gunicorn_env

AUTH = {"Authorization": f"Bearer {DEPLOY_TOKEN}"}
FAULT_SECONDS = 5  # /readyz must see a fault, and a recovery, within this


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    child, url = start_fake_upstream(
        tmp_path_factory.mktemp("upstream"), "--default-duration", "0.1", "--api-key", DEPLOY_UPSTREAM_KEY
    )
    yield url
    child.stop()


class Served:
    """gunicorn with the shipped config and two workers on `database_url`, and a client of it."""

    def __init__(self, directory: Path, upstream: str, database_url: str, prefix=()):
        metrics = directory / "metrics"
        metrics.mkdir()
        env = gunicorn_env(upstream, database_url, WEB_CONCURRENCY=2, PROMETHEUS_MULTIPROC_DIR=metrics)
        command = [*prefix, sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py"]
        self.gunicorn, port = start_gunicorn(directory, env, command=command)
        self.url = f"http://127.0.0.1:{port}"
        self.workers = wait_until(
            lambda: len(children_of(self.gunicorn.pid)) == 2 and children_of(self.gunicorn.pid), 10, "two workers"
        )

    def ready(self):
        """(status, body) of /readyz."""
        status, _, body = call("GET", f"{self.url}/readyz", timeout=10)
        return status, body

    def write(self):
        """(status, body) of a new thread: a write to the database."""
        status, _, body = call("POST", f"{self.url}/api/openai/threads", {}, AUTH, timeout=10)
        return status, body

    def read(self, thread_id: str) -> int:
        return call("GET", f"{self.url}/api/openai/threads/{thread_id}", headers=AUTH, timeout=10)[0]


class Load:
    """Writes in a loop from a background thread, every answer kept."""

    def __init__(self, served: Served):
        self.served = served
        self.answers: list[tuple[int, object]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self):
        while not self._stop.is_set():
            self.answers.append(self.served.write())
            time.sleep(0.02)

    def stop(self):
        self._stop.set()
        self._thread.join(15)


# As root, file modes bind only a process without CAP_DAC_OVERRIDE: gunicorn runs without it where
# a test makes the file read-only with chmod, as it would run as an ordinary user.
WITHOUT_ROOT_OVERRIDE = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--")
READ_ONLY = {
    "chattr +i": (["chattr", "+i"], ["chattr", "-i"], ()),
    "chmod 444": (["chmod", "444"], ["chmod", "644"], WITHOUT_ROOT_OVERRIDE),
}


def _sqlite_served(tmp_path, upstream, prefix=()):
    db = tmp_path / "data" / "backend.db"
    db.parent.mkdir()
    upgrade(f"sqlite:///{db}")
    served = Served(tmp_path, upstream, f"sqlite:///{db}", prefix)
    served.db = db
    return served


@pytest.fixture
def sqlite_served(tmp_path, upstream):
    served = _sqlite_served(tmp_path, upstream)
    yield served
    served.gunicorn.stop()


def _until_ready(served: Served, expected: int):
    def seen():
        status, body = served.ready()
        return (status, body) if status == expected else None

    return wait_until(seen, FAULT_SECONDS, f"/readyz to answer {expected}", interval=0.1)


def _assert_no_500_and_workers_alive(served: Served, answers):
    statuses = {status for status, _ in answers}
    assert statuses <= {200, 503}, statuses
    for status, body in answers:
        if status == 503:
            assert body["error"] == "The database is unavailable; try again later.", body
    assert children_of(served.gunicorn.pid) == served.workers, "a worker died"
    log = served.gunicorn.log()
    assert "Traceback" not in log and "unhandled error" not in log and "SIGBUS" not in log, log[-3000:]


def _assert_writes_work(served: Served):
    wait_until(lambda: served.write()[0] == 200, FAULT_SECONDS, "a write to work again", interval=0.1)
    for _ in range(10):  # every pooled connection of both workers, not only one lucky one
        status, body = served.write()
        assert status == 200, body
        assert served.read(body["id"]) == 200


@pytest.mark.parametrize("how", sorted(READ_ONLY))
def test_a_read_only_sqlite_file_is_not_ready_and_writes_work_again_after(tmp_path, upstream, how):
    protect, unprotect, prefix = READ_ONLY[how]
    served = _sqlite_served(tmp_path, upstream, prefix)
    try:
        _read_only_then_writable(served, protect, unprotect)
    finally:
        subprocess.run([*unprotect, str(served.db)], capture_output=True)
        served.gunicorn.stop()


def _read_only_then_writable(served, protect, unprotect):
    assert served.ready()[0] == 200 and served.write()[0] == 200
    load = Load(served)
    try:
        time.sleep(0.5)
        done = subprocess.run([*protect, str(served.db)], capture_output=True, text=True)
        assert done.returncode == 0, f"{protect} failed: {done.stderr}"
        _, body = _until_ready(served, 503)
        assert body["status"] == "unavailable" and "database" in body["failing"], body
        assert body["failing"]["database"] == "the database file is not writable"
        assert "ratelimit" not in body["failing"]
        wait_until(lambda: any(s == 503 for s, _ in load.answers), FAULT_SECONDS, "a write refused with 503")
        time.sleep(1)
        subprocess.run([*unprotect, str(served.db)], check=True)
        _, body = _until_ready(served, 200)
        assert body["status"] == "ok"
        _assert_writes_work(served)
    finally:
        load.stop()
    _assert_no_500_and_workers_alive(served, load.answers)


@pytest.mark.parametrize("fault", ["file deleted", "directory moved away"])
def test_a_deleted_sqlite_file_is_never_written_and_writes_work_again_once_it_is_back(sqlite_served, fault):
    served = sqlite_served
    db = served.db
    thread_before = served.write()[1]["id"]
    kept = db.parent.parent / "kept"
    load = Load(served)
    try:
        time.sleep(0.5)
        if fault == "file deleted":
            os.link(db, kept)  # the inode lives on under another name, to be put back later
            db.unlink()
        else:
            db.parent.rename(kept)
        wal = kept / "backend.db-wal" if fault != "file deleted" else db.with_name("backend.db-wal")
        _, body = _until_ready(served, 503)
        assert body["failing"]["database"] == "the database file is missing", body
        time.sleep(0.2)  # writes in flight at the unlink have ended
        before = wal.stat()
        refused = [served.write() for _ in range(5)]
        time.sleep(1)
        assert [status for status, _ in refused] == [503] * 5, refused
        after = wal.stat()
        # Nothing went into the deleted file (through its write-ahead log), and no new file was made.
        assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
        assert not db.exists()
        if fault == "file deleted":
            kept.rename(db)
        else:
            kept.rename(db.parent)
        _until_ready(served, 200)
        _assert_writes_work(served)
    finally:
        load.stop()
    assert served.read(thread_before) == 200  # what was written before the fault is still there
    _assert_no_500_and_workers_alive(served, load.answers)


def test_postgresql_restarted_under_load_is_not_ready_meanwhile_and_writes_work_again(
    tmp_path, upstream, postgres_server, postgres_url
):
    served = Served(tmp_path, upstream, postgres_url)
    load = None
    try:
        assert served.ready()[0] == 200 and served.write()[0] == 200
        load = Load(served)
        time.sleep(0.5)
        postgres_server.stop_server()
        try:
            _, body = _until_ready(served, 503)
            assert "database" in body["failing"], body
            wait_until(lambda: any(s == 503 for s, _ in load.answers), FAULT_SECONDS, "a write refused with 503")
        finally:
            postgres_server.start_server()
        _until_ready(served, 200)
        _assert_writes_work(served)
        load.stop()
        _assert_no_500_and_workers_alive(served, load.answers)
        assert sum(1 for s, _ in load.answers if s == 200) > 0
    finally:
        if load is not None:
            load.stop()
        served.gunicorn.stop()
        shutil.rmtree(tmp_path / "metrics", ignore_errors=True)


# --- in one process: the file replaced, the disk full, and what the operator sees --------------------------------


@pytest.fixture
def engine_name():
    """Storage faults are the same on both engines: one is enough in this process."""
    return "responses"


def _sqlite_file(app) -> Path:
    return Path(app.extensions["services"].records.db.url.database)


def test_a_replaced_sqlite_file_is_opened_afresh_not_read_through_old_connections(make_app, migrated_db):
    app = make_app()
    alice = Api(app.test_client(), TOKENS["alice"])
    thread = alice.new_thread()
    db = _sqlite_file(app)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # nothing of the old file left in its WAL
    conn.close()
    replacement = db.with_name("replacement.db")
    shutil.copy(migrated_db, replacement)  # an empty database, as a restore from an older backup would be
    os.replace(replacement, db)
    # The pooled connections read the old inode; the backend asks the new file.
    assert alice.get(f"/threads/{thread}").status_code == 404
    assert alice.get(f"/threads/{alice.new_thread()}").status_code == 200
    app.extensions["services"].records.db.dispose()


def test_a_full_disk_is_not_ready_and_writes_are_refused(make_app, monkeypatch):
    app = make_app()
    alice = Api(app.test_client(), TOKENS["alice"])
    assert app.test_client().get("/readyz").status_code == 200
    free = [guard.MIN_FREE_BYTES - 1]
    real = guard.shutil.disk_usage
    monkeypatch.setattr(guard.shutil, "disk_usage", lambda path: real(path)._replace(free=free[0]))
    time.sleep(READY_CACHE_SECONDS)
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 503
    assert ready.json["failing"] == {"database": "the disk that holds the database is full"}
    refused = alice.post("/threads", json={})
    assert refused.status_code == 503 and refused.json == {"error": "The database is unavailable; try again later."}
    assert refused.headers["Retry-After"] == "2" and refused.headers["x-should-retry"] == "false"
    free[0] = guard.MIN_FREE_BYTES
    time.sleep(READY_CACHE_SECONDS)
    assert app.test_client().get("/readyz").status_code == 200
    assert alice.post("/threads", json={}).status_code == 200


def test_the_operator_sees_a_storage_fault_in_metrics_and_logs(make_app, capsys):
    app = make_app()
    alice = Api(app.test_client(), TOKENS["alice"])
    db = _sqlite_file(app)
    errors_before = _metric(app, "backend_storage_errors_total")
    not_ready_before = _metric(app, "backend_not_ready_total", dependency="database")
    moved = db.with_name("moved.db")
    db.rename(moved)
    try:
        assert alice.post("/threads", json={}).status_code == 503
        assert app.test_client().get("/readyz").status_code == 503
    finally:
        moved.rename(db)
    assert _metric(app, "backend_storage_errors_total") == errors_before + 1
    assert _metric(app, "backend_not_ready_total", dependency="database") == not_ready_before + 1
    err = capsys.readouterr().err
    assert "database unavailable: StorageUnavailable: the database file is missing" in err
    assert "readiness: database: the database file is missing" in err
    time.sleep(READY_CACHE_SECONDS)
    assert app.test_client().get("/readyz").status_code == 200


def _metric(app, name: str, **labels) -> float:
    text = app.test_client().get("/metrics").get_data(as_text=True)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return sample.value
    return 0.0

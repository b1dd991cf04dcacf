"""Faults injected for real: a gunicorn worker killed with runs waiting, the fake upstream stopped,
restarted or answering garbage. Each test checks what the client got, what the upstream saw and what
the database holds."""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.runs.recovery import HEARTBEAT_SECONDS
from app.store.db import make_database, runs, threads, upgrade
from harness.servers import start_fake_upstream, start_gunicorn, wait_until
from tests.helpers import DEPLOY_TOKEN, DEPLOY_UPSTREAM_KEY, call, gunicorn_env

AUTH = {"Authorization": f"Bearer {DEPLOY_TOKEN}"}
RUN_TIMEOUT = 20
RUN_SECONDS = 3


class Backend:
    """gunicorn (the shipped config, 2 gevent workers) on a SQLite file, in front of a fake upstream process."""

    def __init__(self, directory: Path, upstream_url: str, **env):
        self.directory = directory
        self.db_path = directory / "backend.db"
        upgrade(f"sqlite:///{self.db_path}")
        self.env = gunicorn_env(
            upstream_url,
            f"sqlite:///{self.db_path}",
            RUN_TIMEOUT_SECONDS=RUN_TIMEOUT,
            PROMETHEUS_MULTIPROC_DIR=directory,
            WEB_CONCURRENCY=2,
            **env,
        )
        self.gunicorn, self.port = start_gunicorn(directory, self.env)
        self.api = f"http://127.0.0.1:{self.port}/api/openai"
        self.db = make_database(f"sqlite:///{self.db_path}")

    def stop(self):
        self.gunicorn.stop()
        self.db.dispose()

    def thread_with(self, text: str) -> str:
        status, _, body = call("POST", f"{self.api}/threads", {"messages": [{"role": "user", "content": text}]}, AUTH)
        assert status == 200, body
        return body["id"]

    def say(self, thread_id: str, text: str) -> None:
        status, _, body = call(
            "POST", f"{self.api}/threads/{thread_id}/messages", {"role": "user", "content": text}, AUTH
        )
        assert status == 200, body

    def run(self, thread_id: str) -> tuple[int, dict]:
        status, _, body = call("POST", f"{self.api}/threads/{thread_id}/runs", {"assistant_type": "curator"}, AUTH)
        return status, body

    def get_run(self, thread_id: str, run_id: str) -> tuple[int, dict]:
        status, _, body = call("GET", f"{self.api}/threads/{thread_id}/runs/{run_id}", None, AUTH)
        return status, body

    def lock(self, thread_id: str):
        with self.db.connect() as conn:
            return conn.execute(sa.select(threads).where(threads.c.id == thread_id)).first()

    def recorded(self, run_id: str):
        with self.db.connect() as conn:
            return conn.execute(sa.select(runs).where(runs.c.id == run_id)).first()


def _upstream_stats(upstream_url: str) -> dict:
    return call("GET", f"{upstream_url}/_fake/stats")[2]


class Waiting:
    """A POST .../runs sent on a raw connection in a thread: what the client got back, event lines included."""

    def __init__(self, port: int, thread_id: str, stream: bool):
        self.lines: list[str] = []
        self.status = None
        self.error = None
        body = json.dumps({"assistant_type": "curator", "stream": stream})
        self._thread = threading.Thread(target=self._send, args=(port, thread_id, body), daemon=True)
        self._thread.start()

    def _send(self, port, thread_id, body):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            headers = {**AUTH, "Content-Type": "application/json"}
            connection.request("POST", f"/api/openai/threads/{thread_id}/runs", body, headers)
            answer = connection.getresponse()
            self.status = answer.status
            while line := answer.readline():
                self.lines.append(line.decode().rstrip("\n"))
        except (OSError, http.client.HTTPException) as exc:
            self.error = exc
        finally:
            connection.close()

    def result(self, timeout: float = 30):
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the request never ended"
        return self


@pytest.fixture
def upstream(tmp_path):
    child, url = start_fake_upstream(tmp_path, "--default-duration", "0.2", "--api-key", DEPLOY_UPSTREAM_KEY)
    yield url
    child.stop()


@pytest.fixture
def backend(tmp_path, upstream):
    server = Backend(tmp_path, upstream)
    yield server
    server.stop()


def test_a_killed_worker_s_runs_are_adopted_and_their_threads_freed(backend, upstream):
    polled_thread = backend.thread_with(f"polled [fake duration={RUN_SECONDS}]")
    streamed_thread = backend.thread_with(f"streamed [fake duration={RUN_SECONDS}]")
    polled = Waiting(backend.port, polled_thread, stream=False)
    streamed = Waiting(backend.port, streamed_thread, stream=True)

    def started():
        locks = [backend.lock(t) for t in (polled_thread, streamed_thread)]
        if all(lock.lock_run and not lock.lock_run.startswith("starting-") for lock in locks):
            return locks
        return None

    locks = wait_until(started, 10, "both runs to be created and waited for")
    run_ids = {lock.id: lock.lock_run for lock in locks}
    holders = {lock.lock_pid for lock in locks}
    assert all(lock.lock_host and lock.lock_beat for lock in locks)
    killed_at = time.monotonic()
    for pid in holders:
        os.kill(pid, signal.SIGKILL)

    # The clients: the connection dropped, with no answer (polled) or a stream cut before its end.
    assert polled.result().status is None and polled.error is not None
    assert streamed.result().status == 200
    assert "event: thread.run.created" in streamed.lines and "event: done" not in streamed.lines

    # Another worker notices within a heartbeat (the same host: the pid is gone) and adopts the runs.
    def adopted():
        locks = [backend.lock(t) for t in run_ids]
        return all(lock.lock_run is None or lock.lock_pid not in holders for lock in locks)

    wait_until(adopted, HEARTBEAT_SECONDS + 2, "the dead worker's locks to be taken over")
    assert time.monotonic() - killed_at <= HEARTBEAT_SECONDS + 2
    for thread_id, run_id in run_ids.items():
        final = wait_until(
            lambda t=thread_id, r=run_id: (a := backend.get_run(t, r))[1].get("status") == "completed" and a[1],
            RUN_SECONDS + HEARTBEAT_SECONDS + 5,
            f"the adopted run {run_id} to end",
        )
        assert final["id"] == run_id
        recorded = backend.recorded(run_id)
        assert recorded.status == "completed" and recorded.finished_at is not None
        wait_until(lambda t=thread_id: backend.lock(t).lock_run is None, 5, "the adopter to free the thread")
    assert _upstream_stats(upstream)["runs_created"] == 2  # one run per request, none started again

    # The threads take the next run.
    for thread_id in run_ids:
        backend.say(thread_id, "after the crash [fake duration=0.1]")
        status, body = backend.run(thread_id)
        assert status == 200 and body["status"] == "completed", body
    assert _upstream_stats(upstream)["runs_created"] == 4
    assert "this process adopts the run" in backend.gunicorn.log()


def test_the_heartbeat_keeps_a_long_run_s_lock_fresh(backend):
    thread_id = backend.thread_with("long [fake duration=8]")
    waiting = Waiting(backend.port, thread_id, stream=False)
    first = wait_until(lambda: (lock := backend.lock(thread_id)).lock_beat and lock, 10, "the lock")
    time.sleep(HEARTBEAT_SECONDS + 1)
    later = backend.lock(thread_id)
    assert later.lock_pid == first.lock_pid and later.lock_beat > first.lock_beat
    assert waiting.result().status == 200

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
from harness.servers import free_port, start_fake_upstream, start_gunicorn, wait_until
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


UPSTREAM_OPTIONS = ("--default-duration", "0.2", "--api-key", DEPLOY_UPSTREAM_KEY)
ASSISTANTS = {"OPENAI_ENGINE": "assistants", "ASSISTANT_CURATOR_ID": "asst_curator"}


@pytest.fixture
def upstream(tmp_path):
    child, url = start_fake_upstream(tmp_path, *UPSTREAM_OPTIONS)
    yield url
    child.stop()


@pytest.fixture
def backend(tmp_path, upstream):
    server = Backend(tmp_path, upstream)
    yield server
    server.stop()


def _knobs(upstream_url: str, **values) -> None:
    status, _, body = call("POST", f"{upstream_url}/_fake/config", values)
    assert status == 200, body


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


# --- a create that fails upstream -----------------------------------------------------------------

# fault -> (HTTP answer, whether the upstream made the run), on an upstream that lists a thread's runs
# (Assistants). On the Responses engine nothing can tell, so every fault there keeps the hold (504).
CREATE_FAULTS = {
    "500-before": (503, False),
    "500-after": (200, True),
    "reset-before": (504, False),
    "reset-after": (200, True),
    "stall-before": (504, False),
    "stall-after": (200, True),
}


@pytest.fixture(scope="module")
def fault_upstream(tmp_path_factory):
    child, url = start_fake_upstream(tmp_path_factory.mktemp("fault-upstream"), *UPSTREAM_OPTIONS)
    _knobs(url, stall_seconds=3)
    yield url
    child.stop()


@pytest.fixture(scope="module", params=["responses", "assistants"])
def fault_backend(request, tmp_path_factory, fault_upstream):
    env = ASSISTANTS if request.param == "assistants" else {}
    server = Backend(tmp_path_factory.mktemp(f"fault-{request.param}"), fault_upstream, **env)
    server.engine = request.param
    yield server
    server.stop()


@pytest.mark.parametrize("fault", CREATE_FAULTS)
def test_a_failed_create_frees_the_thread_when_the_upstream_can_tell_no_run_exists(
    fault_backend, fault_upstream, fault
):
    backend = fault_backend
    thread_id = backend.thread_with("a run whose create fails [fake duration=0.3]")
    before = _upstream_stats(fault_upstream)["runs_created"]
    _knobs(fault_upstream, fail_next_create=fault)
    status, headers, body = call("POST", f"{backend.api}/threads/{thread_id}/runs", {"assistant_type": "curator"}, AUTH)
    expected, made = CREATE_FAULTS[fault]
    if backend.engine == "responses":
        expected = 504
    made_upstream = _upstream_stats(fault_upstream)["runs_created"] - before
    assert made_upstream == int(made)  # the backend never sent the create twice
    assert status == expected, body
    lock = backend.lock(thread_id)
    if expected == 200:  # the run the failed create made was found and waited for
        assert body["status"] == "completed"
        assert backend.recorded(body["id"]).status == "completed" and lock.lock_run is None
    elif expected == 503:  # nothing was made: the thread is free, and a retry is allowed
        assert headers.get("x-should-retry") != "false" and "made none" in body["error"]
        assert lock.lock_run is None
        status, body = backend.run(thread_id)
        assert status == 200 and body["status"] == "completed"
        assert _upstream_stats(fault_upstream)["runs_created"] - before == 1
    else:  # nothing can tell: the thread stays busy until the lock expires
        assert headers.get("x-should-retry") == "false"
        assert lock.lock_run is not None
        assert backend.run(thread_id)[0] == 409
        assert _upstream_stats(fault_upstream)["runs_created"] - before == int(made)


# --- an upstream that cannot be reached, refuses the key, forgets, or answers garbage -------------


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_an_unreachable_upstream_is_named_in_the_log_and_said_to_the_client(tmp_path):
    url = _closed_port_url()
    backend = Backend(tmp_path, url)
    try:
        log = wait_until(
            lambda: "does not answer" in (text := backend.gunicorn.log()) and text, 10, "the start warning"
        )
        assert log.count("does not answer") == 1  # once per start, not per worker
        assert f"the upstream at {url}/v1 does not answer (connection refused)" in log
        status, headers, body = call("POST", f"{backend.api}/threads", {}, AUTH)
        assert status == 503 and "could not be reached" in body["error"], body
        assert "rate-limit" not in body["error"]
        log = backend.gunicorn.log()
        assert f"the upstream at {url}/v1/conversations could not be reached: connection refused" in log
        assert DEPLOY_UPSTREAM_KEY not in log
    finally:
        backend.stop()


def test_an_upstream_that_refuses_the_key_is_named_in_the_log(tmp_path, upstream):
    wrong_key = "sk-wrong-key-for-this-upstream-000"
    backend = Backend(tmp_path, upstream, OPENAI_API_KEY=wrong_key)
    try:
        log = wait_until(lambda: "refuses" in (text := backend.gunicorn.log()) and text, 10, "the start warning")
        assert f"the upstream at {upstream}/v1 refuses this backend's key (HTTP 401)" in log
        status, _, body = call("POST", f"{backend.api}/threads", {}, AUTH)
        assert status == 502 and "key" in body["error"]
        log = backend.gunicorn.log()
        assert f"upstream at {upstream}/v1/conversations rejected the key" in log
        assert wrong_key not in log
    finally:
        backend.stop()


@pytest.mark.parametrize("engine", ["responses", "assistants"])
def test_an_upstream_restarted_has_forgotten_threads_and_runs_a_502_not_a_404(tmp_path, engine):
    port = free_port()
    child, url = start_fake_upstream(tmp_path, *UPSTREAM_OPTIONS, port=port)
    backend = Backend(tmp_path, url, **(ASSISTANTS if engine == "assistants" else {}))
    try:
        forgotten = backend.thread_with("made before the restart [fake duration=0.1]")
        waiting_thread = backend.thread_with("waited across the restart [fake duration=4]")
        waiting = Waiting(backend.port, waiting_thread, stream=False)
        run_id = wait_until(
            lambda: (
                (lock := backend.lock(waiting_thread)).lock_run
                and not lock.lock_run.startswith("starting-")
                and lock.lock_run
            ),
            10,
            "the run to start",
        )
        child.stop()
        child, url = start_fake_upstream(tmp_path, *UPSTREAM_OPTIONS, port=port)

        # The run being waited for: the upstream no longer knows it.
        waiting.result()
        assert waiting.status == 502
        answer = json.loads("".join(waiting.lines))
        assert "no longer knows" in answer["error"]
        recorded = backend.recorded(run_id)
        assert recorded.status == "failed" and json.loads(recorded.snapshot)["last_error"]["code"] == "upstream_lost"
        assert backend.lock(waiting_thread).lock_run is None
        status, run = backend.get_run(waiting_thread, run_id)
        assert status == 200 and run["status"] == "failed"

        # A new run on a thread the upstream forgot.
        status, body = backend.run(forgotten)
        assert status == 502 and "no longer knows thread" in body["error"], body
        assert backend.lock(forgotten).lock_run is None
        assert _upstream_stats(url)["runs_created"] == 0
    finally:
        backend.stop()
        child.stop()


def test_an_upstream_answering_garbage_mid_wait_is_waited_through(backend, upstream):
    thread_id = backend.thread_with("garbage for a while [fake duration=2]")
    waiting = Waiting(backend.port, thread_id, stream=False)
    wait_until(lambda: (lock := backend.lock(thread_id)).lock_run and not lock.lock_run.startswith("s"), 10, "run")
    _knobs(upstream, garbage=True)
    status, _, body = call("POST", f"{backend.api}/threads", {}, AUTH)
    assert status == 503 and "not its API" in body["error"], body
    time.sleep(0.5)
    _knobs(upstream, garbage=False)  # /_fake answers are never garbage
    assert waiting.result().status == 200
    assert json.loads("".join(waiting.lines))["status"] == "completed"

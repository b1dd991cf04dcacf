"""A thread whose lock's process died: how long it stays blocked, and how the run is adopted (in process).

The same with a real gunicorn worker killed: tests/test_faults.py.
"""

from __future__ import annotations

import socket
import subprocess
import time

import sqlalchemy as sa

from app.runs import recovery
from app.store.db import threads
from app.store.records import ProcessId
from harness.servers import wait_until
from tests.helpers import RUN_CREATE, create_run_upstream, upstream_calls

ELSEWHERE = ProcessId("another-host", 4242, 12345)


def _dead_process_here() -> ProcessId:
    """The identity of a process of this host that has ended (and been reaped)."""
    child = subprocess.Popen(["sleep", "30"])
    with open(f"/proc/{child.pid}/stat") as stat:
        started = int(stat.read().rpartition(")")[2].split()[19])
    child.kill()
    child.wait()
    return ProcessId(socket.gethostname(), child.pid, started)


def _set_beat(records, thread_id: str, at: float) -> None:
    with records.db.begin() as conn:
        conn.execute(threads.update().where(threads.c.id == thread_id).values(lock_beat=at))


def _run_held_by(app, thread_id: str, process: ProcessId) -> dict:
    """A run started upstream and recorded as the one `process` waits for, as a request would have left it."""
    services = app.extensions["services"]
    records = services.records
    assert records.lock_thread(thread_id, "starting-crashed", 600, process)
    assistant = services.settings.assistant_types[0]
    run = create_run_upstream(services.engine, thread_id, assistant)
    records.run_started(thread_id, "starting-crashed", run, "alice", assistant.name)
    return run


def test_a_dead_holder_on_another_host_blocks_its_thread_at_most_15_seconds(app, api):
    """The pinned bound: a holder elsewhere is dead once its heartbeat is 15 s old, not before."""
    thread = api.new_thread()
    api.say(thread, "after the crash [fake duration=0.05]")
    records = app.extensions["services"].records
    assert records.lock_thread(thread, "starting-elsewhere", 600, ELSEWHERE)
    _set_beat(records, thread, time.time() - 14.0)
    busy = api.run(thread)
    assert busy.status_code == 409
    _set_beat(records, thread, time.time() - 15.5)
    answer = api.run(thread)
    assert answer.status_code == 200, answer.json
    assert answer.json["status"] == "completed"
    assert recovery.STALE_AFTER_SECONDS <= 15.0


def test_a_live_holder_keeps_its_thread_however_old_the_lock(app, api):
    thread = api.new_thread()
    records = app.extensions["services"].records
    assert records.lock_thread(thread, "starting-alive", 600, recovery.this_process())
    _set_beat(records, thread, time.time() - 3600)
    assert api.run(thread).status_code == 409
    assert recovery.recover(app.extensions["services"], thread) is None


def test_a_dead_process_on_this_host_is_seen_at_once_and_its_run_adopted(app, api, fake, engine_name):
    thread = api.new_thread()
    api.say(thread, "crashed while waiting [fake duration=0.5]")
    run = _run_held_by(app, thread, _dead_process_here())
    answer = api.get(f"/threads/{thread}/runs/{run['id']}")  # a client that retries after its connection dropped
    assert answer.status_code == 200
    final = wait_until(
        lambda: (r := api.get(f"/threads/{thread}/runs/{run['id']}").json)["status"] == "completed" and r,
        10,
        "the adopted run to be recorded",
    )
    assert final["id"] == run["id"]
    records = app.extensions["services"].records
    recorded = records.run(run["id"])
    assert recorded.final and recorded.run["status"] == "completed"
    assert records.thread_lock(thread) is None
    reply = api.get(f"/threads/{thread}/messages?limit=1").json["data"][0]
    assert "crashed while waiting" in reply["content"][0]["text"]["value"]
    api.say(thread, "next [fake duration=0.05]")
    assert api.run(thread).status_code == 200
    assert upstream_calls(fake, RUN_CREATE[engine_name]) == 2  # the adopted run and the next: none twice


def test_the_heartbeat_recovers_a_dead_process_s_run_with_no_request(app, api):
    thread = api.new_thread()
    api.say(thread, "nobody asks [fake duration=0.2]")
    run = _run_held_by(app, thread, _dead_process_here())
    services = app.extensions["services"]
    recovery.Heartbeat.once(services)
    wait_until(lambda: services.records.run(run["id"]).final, 10, "the run to be adopted and recorded")
    assert services.records.run(run["id"]).run["status"] == "completed"
    assert services.records.thread_lock(thread) is None


def test_a_heartbeat_refreshes_only_its_own_process_s_locks(app, api):
    records = app.extensions["services"].records
    mine, theirs = api.new_thread(), api.new_thread()
    assert records.lock_thread(mine, "starting-a", 600, recovery.this_process())
    assert records.lock_thread(theirs, "starting-b", 600, ELSEWHERE)
    for thread in (mine, theirs):
        _set_beat(records, thread, 1000.0)
    assert records.beat(recovery.this_process()) == 1
    with records.db.connect() as conn:
        beats = dict(conn.execute(sa.select(threads.c.id, threads.c.lock_beat)).all())
    assert beats[mine] > time.time() - 5 and beats[theirs] == 1000.0
    lock = records.thread_lock(theirs)
    assert records.take_over(theirs, lock, recovery.this_process(), 60)
    assert not records.take_over(theirs, lock, recovery.this_process(), 60)  # one process wins


def test_an_adopted_run_the_upstream_no_longer_knows_is_recorded_failed(app, api):
    thread = api.new_thread()
    api.say(thread, "forgotten [fake duration=0.2]")
    services = app.extensions["services"]
    records = services.records
    assert records.lock_thread(thread, "starting-crashed", 600, _dead_process_here())
    shape = create_run_upstream(services.engine, thread, services.settings.assistant_types[0])
    gone = dict(shape, id=shape["id"][:4] + "0" * (len(shape["id"]) - 4))  # a run the upstream never had
    records.run_started(thread, "starting-crashed", gone, "alice", "curator")
    answer = api.get(f"/threads/{thread}/runs/{gone['id']}")
    assert answer.status_code == 200
    wait_until(lambda: records.run(gone["id"]).final, 10, "the adoption to end")
    recorded = records.run(gone["id"]).run
    assert recorded["status"] == "failed" and recorded["last_error"]["code"] == "upstream_lost"
    assert records.thread_lock(thread) is None

"""What the backend remembers when the upstream can't: old runs, the lock across processes, the schema."""

from __future__ import annotations

import shutil

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.store.db import make_database, metadata
from app.store.records import Records
from harness.servers import wait_until
from tests.helpers import TOKENS, Api, background_run


def test_a_finished_run_is_answered_from_the_record_without_an_upstream_call(api, fake):
    thread = api.new_thread()
    api.say(thread, "hi [fake duration=0.05]")
    run = api.run(thread).json
    before = fake.stats()["polls"]
    again = api.get(f"/threads/{thread}/runs/{run['id']}")
    assert again.status_code == 200 and again.json == run
    assert fake.stats()["polls"] == before


@pytest.mark.parametrize("engine_name", ["responses"])
def test_a_run_the_upstream_has_forgotten_is_still_answered(api, app, fake):
    thread = api.new_thread()
    api.say(thread, "hi [fake duration=0.6]")
    with background_run(api, thread) as (pending, run_id):
        seen = api.get(f"/threads/{thread}/runs/{run_id}").json
        assert seen["status"] in ("queued", "in_progress")
        assert pending.result().status_code == 200
    fake.forget(run_id)
    remembered = api.get(f"/threads/{thread}/runs/{run_id}")
    assert remembered.status_code == 200 and remembered.json["status"] == "completed"


def test_an_unknown_thread_id_from_elsewhere_is_404(api):
    for thread in ("thread_abc123FromTheOldAssistantsApi", "conv_notcreatedhere"):
        answer = api.get(f"/threads/{thread}/messages")
        assert answer.status_code == 404 and thread in answer.json["error"]


def test_the_busy_thread_409_holds_across_two_processes_sharing_the_database(make_app, fake):
    first, second = (Api(make_app().test_client(), TOKENS["alice"]) for _ in range(2))
    thread = first.new_thread()
    first.say(thread, "slow [fake duration=0.8]")
    with background_run(first, thread) as (pending, _):
        assert second.run(thread).status_code == 409
        assert second.post(f"/threads/{thread}/messages", json={"role": "user", "content": "x"}).status_code == 409
        assert pending.result().status_code == 200
    assert fake.stats()["runs_created"] == 1


def test_a_lock_left_by_a_crashed_process_expires(app, api):
    thread = api.new_thread()
    records = app.extensions["services"].records
    assert records.lock_thread(thread, "run_crashed", seconds=2.0)
    assert api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "x"}).status_code == 409
    wait_until(lambda: records.active_run(thread) is None, 5.0, "the lock to expire")
    api.say(thread, "the lock has expired [fake duration=0.05]")
    assert api.run(thread).status_code == 200


def test_migrations_match_the_tables(migrated_db):
    engine = make_database(f"sqlite:///{migrated_db}")
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        tables = set(sa.inspect(conn).get_table_names())
    assert differences == []
    assert {"threads", "runs", "messages", "idempotency"} <= tables
    engine.dispose()


def test_the_thread_lock_has_one_live_holder_and_expires(migrated_db, tmp_path):
    db = tmp_path / "lock.db"
    shutil.copy(migrated_db, db)
    engine = make_database(f"sqlite:///{db}")
    now = [1000.0]
    records = Records(engine, clock=lambda: now[0])
    try:
        records.add_thread("thread_1", "alice", "responses")
        assert records.lock_thread("thread_1", "run_a", 60)
        assert not records.lock_thread("thread_1", "run_b", 60)  # a live holder keeps it
        assert records.active_run("thread_1") == "run_a"
        records.unlock_thread("thread_1", "run_b")  # not the holder: no effect
        assert not records.lock_thread("thread_1", "run_b", 60)
        now[0] += 61  # run_a's deadline has passed
        assert records.active_run("thread_1") is None
        assert records.lock_thread("thread_1", "run_b", 60)
        records.unlock_thread("thread_1", "run_a")  # the old holder cannot free it
        assert records.active_run("thread_1") == "run_b"
        records.unlock_thread("thread_1", "run_b")
        assert records.active_run("thread_1") is None
        assert records.lock_thread("thread_1", "run_c", 60)
    finally:
        engine.dispose()

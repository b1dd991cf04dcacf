"""What the backend remembers when the upstream can't: old runs, the lock across processes, the schema."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from app.store.db import make_engine, metadata
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
    assert records.lock_thread(thread, "run_crashed", seconds=0.2)
    assert api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "x"}).status_code == 409
    time.sleep(0.3)
    api.say(thread, "the lock has expired [fake duration=0.05]")
    assert api.run(thread).status_code == 200


def test_migrations_match_the_tables(migrated_db):
    engine = make_engine(f"sqlite:///{migrated_db}")
    with engine.connect() as conn:
        differences = compare_metadata(MigrationContext.configure(conn), metadata)
        tables = set(sa.inspect(conn).get_table_names())
    assert differences == []
    assert {"threads", "runs", "messages", "idempotency"} <= tables
    engine.dispose()

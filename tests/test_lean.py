"""Plain-SQL transactions (app/store/lean.py): `together` makes several one, in its own thread only."""

from __future__ import annotations

import shutil
import threading

import pytest
import sqlalchemy as sa

from app.store.db import make_database
from app.store.lean import Lean
from app.store.records import Records
from tests.helpers import TOKENS, Api


@pytest.fixture
def engine(migrated_db, tmp_path):
    path = tmp_path / "lean.db"
    shutil.copy(migrated_db, path)
    engine = make_database(f"sqlite:///{path}")
    yield engine
    engine.dispose()


def _messages(engine) -> list[str]:
    with Lean(engine).transaction() as sql:
        return [row[0] for row in sql("SELECT id FROM messages ORDER BY id").fetchall()]


def _add(lean: Lean, message_id: str) -> None:
    with lean.transaction() as sql:
        sql("INSERT INTO messages (id, thread_id, run_id, body) VALUES (?, 't', NULL, '{}')", (message_id,))


def test_transactions_inside_together_commit_as_one(engine):
    lean, checkouts = Lean(engine), []
    sa.event.listen(engine.pool, "checkout", lambda *args: checkouts.append(1))
    with lean.together():
        _add(lean, "m1")
        _add(Lean(engine), "m2")  # another Lean on the same engine joins too
        assert len(checkouts) == 1
    assert _messages(engine) == ["m1", "m2"]


def test_an_error_inside_together_leaves_none_of_its_writes(engine):
    lean = Lean(engine)
    with pytest.raises(RuntimeError), lean.together():
        _add(lean, "m1")
        _add(lean, "m2")
        raise RuntimeError("the run's end failed")
    assert _messages(engine) == []
    _add(lean, "m3")  # each transaction commits alone again afterwards
    assert _messages(engine) == ["m3"]


def test_another_thread_inside_together_has_its_own_transaction(engine):
    lean, seen = Lean(engine), []
    with lean.together():
        _add(lean, "m1")

        def elsewhere():
            with lean.transaction() as sql:  # not joined: it sees only what is committed
                seen.extend(row[0] for row in sql("SELECT id FROM messages").fetchall())

        worker = threading.Thread(target=elsewhere)
        worker.start()
        worker.join()
    assert seen == []
    assert _messages(engine) == ["m1"]


def test_the_lock_and_the_runs_end_through_records_together(engine):
    records = Records(engine)
    records.add_thread("t1", "alice", "responses")
    with pytest.raises(RuntimeError), records.together():
        assert records.lock_owned_thread("t1", "alice", "starting-1", 60) == []
        raise RuntimeError("nothing upstream")
    assert records.active_run("t1") is None  # the lock was rolled back with the rest


@pytest.mark.parametrize("strategy", ["poll", "stream"])
def test_a_run_takes_three_database_transactions(make_app, strategy):
    """The lock (with what the run may search), the run's start, and its end (snapshot, messages,
    steps, usage, unlock): docs/benchmarks.md counts them per POST .../runs. Read from the
    upstream's events, a reply's step is recorded once, at the end, not as its first words come."""
    app = make_app(WAIT_STRATEGY=strategy)
    api = Api(app.test_client(), TOKENS["alice"])
    checkouts = []
    engine = app.extensions["services"].records.db
    thread_id = api.new_thread()
    api.say(thread_id, "hello there [fake duration=0.2]")
    sa.event.listen(engine.pool, "checkout", lambda *args: checkouts.append(1))
    answer = api.run(thread_id)
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["status"] == "completed"
    assert len(checkouts) == 3
    run_id = answer.get_json()["id"]
    steps = api.get(f"/threads/{thread_id}/runs/{run_id}/steps").get_json()["data"]
    assert [(s["type"], s["status"]) for s in steps] == [("message_creation", "completed")]


@pytest.mark.parametrize("engine_name", ["responses"])  # the assistants engine's lists are whole upstream
def test_the_newest_page_of_messages_is_completed_from_the_owners_check(app, api):
    """`GET .../messages` (newest first, no cursor) reads the owner and the newest records in one
    transaction; other pages, and messages the record does not hold, take a second read."""
    thread_id = api.new_thread()
    for text in ("one", "two", "three"):
        api.say(thread_id, text)
    engine = app.extensions["services"].records.db
    checkouts = []
    sa.event.listen(engine.pool, "checkout", lambda *args: checkouts.append(1))

    def listed(query=""):
        checkouts.clear()
        answer = api.get(f"/threads/{thread_id}/messages{query}")
        assert answer.status_code == 200, answer.get_json()
        return [m["content"][0]["text"]["value"] for m in answer.get_json()["data"]], len(checkouts)

    assert listed() == (["three", "two", "one"], 1)
    assert listed("?limit=2") == (["three", "two"], 1)
    assert listed("?order=asc") == (["one", "two", "three"], 2)
    with Lean(engine).transaction() as sql:
        sql("DELETE FROM messages WHERE thread_id = ? AND body LIKE '%two%'", (thread_id,))
    texts, reads = listed()
    assert texts == ["three", "two", "one"] and reads == 3  # the unknown one read, then learned
    assert listed() == (["three", "two", "one"], 1)
    assert api.get(f"/threads/{thread_id}/messages", headers={"Authorization": "Bearer nobody"}).status_code == 401

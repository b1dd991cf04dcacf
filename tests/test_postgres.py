"""The contract's key flows on a real PostgreSQL, on both engines: migrations, threads, messages and
runs, ownership (on SQLite too), the busy-thread 409 across two instances, idempotent replays."""

from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from app.store.db import upgrade
from harness.servers import wait_until
from tests.helpers import TOKENS, Api, upstream_calls


@pytest.fixture
def make_app(make_app):
    """conftest's `make_app`, whose apps close their database connections when the test ends
    (a PostgreSQL connection left to the garbage collector is a ResourceWarning, so an error here)."""
    apps = []

    def build(**overrides):
        apps.append(make_app(**overrides))
        return apps[-1]

    yield build
    for app in apps:
        app.extensions["services"].records.db.dispose()


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar()
    finally:
        engine.dispose()


def _api(app, user="alice") -> Api:
    return Api(app.test_client(), TOKENS[user])


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request):
    """The test's database: the SQLite file of `base_env`, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return request.getfixturevalue("base_env")["DATABASE_URL"]
    return request.getfixturevalue("postgres_url")


def test_migrations_apply_to_an_empty_database_and_again(postgres_server):
    url = postgres_server.new_database(migrated=False)
    engine = sa.create_engine(url)
    try:
        assert sa.inspect(engine).get_table_names() == []
        upgrade(url)
        upgrade(url)  # at head already: nothing to do, no error
        inspector = sa.inspect(engine)
        assert set(inspector.get_table_names()) >= {"threads", "runs", "messages", "idempotency", "alembic_version"}
        assert {c["name"] for c in inspector.get_columns("threads")} >= {"id", "owner", "lock_run", "lock_until"}
        assert _count(url, "alembic_version") == 1
    finally:
        engine.dispose()


def test_threads_messages_and_runs_work_on_postgresql(make_app, postgres_url, fake):
    app = make_app(DATABASE_URL=postgres_url)
    api = _api(app)
    created = api.post("/threads", json={"messages": [{"role": "user", "content": "first"}], "metadata": {"k": "v"}})
    assert created.status_code == 200 and created.json["object"] == "thread"
    thread = created.json["id"]
    assert api.get(f"/threads/{thread}").json["metadata"] == {"k": "v"}
    api.say(thread, "second [fake duration=0.1]")
    run = api.run(thread)
    assert run.status_code == 200 and run.json["status"] == "completed"

    listed = api.get(f"/threads/{thread}/messages?order=asc").json
    assert [m["role"] for m in listed["data"]] == ["user", "user", "assistant"]
    assert listed["data"][2]["content"][0]["text"]["value"] == "Echo: second"
    first, second, reply = (m["id"] for m in listed["data"])
    # The record answers what the upstream may not: `before` a message and by run.
    page = api.get(f"/threads/{thread}/messages?order=asc&limit=1&before={reply}").json
    assert [m["id"] for m in page["data"]] == [second] and page["has_more"] is True
    by_run = api.get(f"/threads/{thread}/messages?run_id={run.json['id']}").json
    assert [m["id"] for m in by_run["data"]] == [reply]
    page = api.get(f"/threads/{thread}/messages?order=desc&limit=2&after={reply}").json
    assert [m["id"] for m in page["data"]] == [second, first]

    again = api.get(f"/threads/{thread}/runs/{run.json['id']}")
    assert again.status_code == 200 and again.json["status"] == "completed"
    assert api.post(f"/threads/{thread}/runs/{run.json['id']}/cancel").status_code == 400
    assert api.delete(f"/threads/{thread}").json == {"id": thread, "object": "thread.deleted", "deleted": True}
    assert api.get(f"/threads/{thread}").status_code == 404
    assert _count(postgres_url, "runs") == 0  # forgotten with the thread


def _same_length_id(real: str) -> str:
    return real[: len(real) - 6] + "nosuch"


def _without_ids(answer, *ids: str) -> tuple:
    """An answer's status, body and header names with the given IDs blanked, for comparison."""
    body = answer.get_data(as_text=True)
    for object_id in ids:
        body = body.replace(object_id, "<id>")
    return answer.status_code, body, sorted(k for k in answer.headers.keys() if k != "X-Request-ID")


def test_another_users_objects_are_indistinguishable_from_missing_ones(make_app, database_url, fake):
    app = make_app(DATABASE_URL=database_url)
    alice, bob = _api(app), _api(app, "bob")
    thread = alice.new_thread()
    alice.say(thread, "mine [fake duration=0.05]")
    run = alice.run(thread).json["id"]
    message = alice.get(f"/threads/{thread}/messages").json["data"][0]["id"]
    bobs = bob.new_thread()
    bob.say(bobs, "his [fake duration=0.05]")
    calls = upstream_calls(fake)

    nothread, norun = _same_length_id(thread), _same_length_id(run)
    # Each pair: bob asks about alice's objects, then about objects that don't exist.
    pairs = [
        (lambda t, r: bob.get(f"/threads/{t}"), thread, nothread),
        (lambda t, r: bob.delete(f"/threads/{t}"), thread, nothread),
        (lambda t, r: bob.get(f"/threads/{t}/messages"), thread, nothread),
        (lambda t, r: bob.post(f"/threads/{t}/messages", json={"role": "user", "content": "hi"}), thread, nothread),
        (lambda t, r: bob.post(f"/threads/{t}/runs", json={"assistant_type": "curator"}), thread, nothread),
        (lambda t, r: bob.get(f"/threads/{t}/runs/{r}"), thread, nothread),
        (lambda t, r: bob.post(f"/threads/{t}/runs/{r}/cancel"), thread, nothread),
    ]
    for call, real, missing in pairs:
        theirs, none = call(real, run), call(missing, norun)
        assert theirs.status_code == 404, theirs.json
        assert _without_ids(theirs, real, run) == _without_ids(none, missing, norun)
    assert upstream_calls(fake) == calls  # nothing reached the upstream

    # Alice's run and message named under bob's own thread.
    for path, real, missing in [
        (f"/threads/{bobs}/runs/{{}}", run, norun),
        (f"/threads/{bobs}/runs/{{}}/cancel", run, norun),
    ]:
        method = bob.post if path.endswith("cancel") else bob.get
        theirs, none = method(path.format(real)), method(path.format(missing))
        assert theirs.status_code == none.status_code == 404, (theirs.json, none.json)
        assert _without_ids(theirs, real) == _without_ids(none, missing)
    for query in ("run_id", "after", "before"):
        real = run if query == "run_id" else message
        theirs = bob.get(f"/threads/{bobs}/messages?{query}={real}")
        none = bob.get(f"/threads/{bobs}/messages?{query}={_same_length_id(real)}")
        assert theirs.status_code == none.status_code, (query, theirs.json, none.json)
        if theirs.status_code == 200:
            assert real not in theirs.get_data(as_text=True)
    assert alice.get(f"/threads/{thread}").status_code == 200  # alice still has it


def test_a_second_run_on_another_instance_is_409(make_app, postgres_url, fake):
    first, second = make_app(DATABASE_URL=postgres_url), make_app(DATABASE_URL=postgres_url)
    alice_first, alice_second = _api(first), _api(second)
    thread = alice_first.new_thread()
    alice_first.say(thread, "take your time [fake duration=1.5]")
    answers = {}
    waiting = threading.Thread(target=lambda: answers.setdefault("first", alice_first.run(thread)))
    waiting.start()
    wait_until(lambda: fake.stats()["runs_created"], 5, "the first run to start upstream")
    assert fake.stats()["runs_created"] == 1

    busy = alice_second.run(thread)
    assert busy.status_code == 409, busy.json
    assert busy.headers["x-should-retry"] == "false"
    assert alice_second.post(f"/threads/{thread}/messages", json={"role": "user", "content": "and?"}).status_code == 409
    assert fake.stats()["runs_created"] == 1  # the refused run never reached the upstream
    waiting.join(10)
    assert answers["first"].status_code == 200

    alice_second.say(thread, "now [fake duration=0.05]")
    assert alice_second.run(thread).status_code == 200
    assert fake.stats()["runs_created"] == 2


def test_idempotent_replays_work_across_instances_on_postgresql(make_app, postgres_url, fake):
    first, second = _api(make_app(DATABASE_URL=postgres_url)), _api(make_app(DATABASE_URL=postgres_url))
    thread = first.new_thread()
    message = {"role": "user", "content": "once [fake duration=0.05]"}
    added = first.post(f"/threads/{thread}/messages", json=message, headers={"Idempotency-Key": "msg-1"})
    replayed = second.post(f"/threads/{thread}/messages", json=message, headers={"Idempotency-Key": "msg-1"})
    assert replayed.status_code == 200 and replayed.json == added.json
    assert replayed.headers["Idempotent-Replayed"] == "true"
    assert len(first.get(f"/threads/{thread}/messages").json["data"]) == 1

    body = {"assistant_type": "curator"}
    run = first.post(f"/threads/{thread}/runs", json=body, headers={"Idempotency-Key": "run-1"})
    assert run.status_code == 200
    again = second.post(f"/threads/{thread}/runs", json=body, headers={"Idempotency-Key": "run-1"})
    assert again.status_code == 200 and again.json == run.json
    assert again.headers["Idempotent-Replayed"] == "true"
    assert fake.stats()["runs_created"] == 1
    changed = {**body, "temperature": 0.5}
    other = second.post(f"/threads/{thread}/runs", json=changed, headers={"Idempotency-Key": "run-1"})
    assert other.status_code == 422
    # Keys belong to their user: bob's "run-1" is his own (and alice's thread is a 404 to him).
    assert (
        _api(second.client.application, "bob")
        .post(f"/threads/{thread}/runs", json=body, headers={"Idempotency-Key": "run-1"})
        .status_code
        == 404
    )

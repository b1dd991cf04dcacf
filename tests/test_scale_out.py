"""Several instances, one service, for real on loopback: three backend instances (gunicorn as shipped)
behind nginx's `upstream` block, sharing one PostgreSQL and one Redis, under a bounded load of blocking
and streamed runs: one run per thread whichever instance is asked, idempotent retries and rate limits
across instances, a stream cut on one instance and read to its end on another, and one instance
killed mid-load while the others finish, nothing is recorded twice and its threads recover."""

from __future__ import annotations

import json
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
import sqlalchemy as sa

from harness.servers import start_fake_upstream, start_gunicorn, start_nginx, start_redis, wait_until
from tests.helpers import DEPLOY_UPSTREAM_KEY, call, gunicorn_env

RUN_TIMEOUT = 6
RUNS_PER_MINUTE = 8
INSTANCES = 3
USERS = {f"user{i}": f"user{i}-scale-token-{i:04d}" for i in range(12)}
USERS["alice"] = "alice-scale-token-0001"
USERS["limited"] = "limited-scale-token-0001"
SLOW = "one two three four five six seven eight nine ten [fake duration=1.5]"


def _auth(user="alice", **more):
    return {"Authorization": f"Bearer {USERS[user]}", **more}


class Cluster:
    """nginx -> three gunicorns -> the fake upstream; PostgreSQL and Redis shared."""

    def __init__(self, directory, upstream_url, database_url, redis_url):
        self.upstream_url = upstream_url
        self.database_url = database_url
        self.instances, self.ports = [], []
        env = gunicorn_env(
            upstream_url,
            database_url,
            RUN_TIMEOUT_SECONDS=RUN_TIMEOUT,
            API_TOKENS=",".join(f"{user}:{token}" for user, token in USERS.items()),
            RATELIMIT_RUNS=f"{RUNS_PER_MINUTE}/minute",
            RATELIMIT_STORAGE_URI=redis_url,  # the event log follows it (EVENT_LOG_URL unset)
        )

        def start(i):
            own = directory / f"instance{i}"
            (own / "metrics").mkdir(parents=True)
            return start_gunicorn(own, {**env, "PROMETHEUS_MULTIPROC_DIR": str(own / "metrics")}, name="gunicorn")

        with ThreadPoolExecutor(INSTANCES) as pool:
            started = list(pool.map(start, range(INSTANCES)))
        self.instances = [child for child, _ in started]
        self.ports = [port for _, port in started]
        (directory / "nginx").mkdir()
        self.nginx, port = start_nginx(directory / "nginx", self.ports, RUN_TIMEOUT)
        self.url = f"http://127.0.0.1:{port}"

    def instance_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports[i]}"

    def stop(self):
        for child in (self.nginx, *self.instances):
            child.stop()

    def runs_created(self) -> int:
        return call("GET", f"{self.upstream_url}/_fake/stats")[2]["runs_created"]

    def thread_with(self, text: str, user="alice", url=None) -> str:
        status, _, body = call(
            "POST",
            f"{url or self.url}/api/openai/threads",
            {"messages": [{"role": "user", "content": text}]},
            _auth(user),
        )
        assert status == 200, body
        return body["id"]

    def stored_reply(self, thread_id: str, user="alice") -> str:
        status, _, body = call("GET", f"{self.url}/api/openai/threads/{thread_id}/messages?limit=10", None, _auth(user))
        assert status == 200, body
        replies = [m for m in body["data"] if m["role"] == "assistant"]
        assert len(replies) == 1, replies
        return replies[0]["content"][0]["text"]["value"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres_server):
    directory = tmp_path_factory.mktemp("scale-out")
    children = []
    try:
        upstream, upstream_url = start_fake_upstream(
            directory, "--default-duration", "0.2", "--api-key", DEPLOY_UPSTREAM_KEY
        )
        children.append(upstream)
        redis, redis_url = start_redis(directory)
        children.append(redis)
        c = Cluster(directory, upstream_url, postgres_server.new_database(), redis_url)
        yield c
        c.stop()
    finally:
        for child in children:
            child.stop()


def _events(lines):
    event_id, name = None, None
    for line in lines:
        if line.startswith("id: "):
            event_id = int(line[4:])
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data = line[6:]
            yield event_id, name, data if data == "[DONE]" else json.loads(data)


def _text(events):
    deltas = [data for _, name, data in events if name == "thread.message.delta"]
    return "".join(part["text"]["value"] for data in deltas for part in data["delta"]["content"])


def _stream(url, thread_id, user="alice", stop_after_deltas=None):
    """A streamed run: the events read (all, or up to `stop_after_deltas` deltas, then the connection dropped)."""
    body = {"assistant_type": "curator", "stream": True}
    seen = []
    with httpx2.stream(
        "POST", f"{url}/api/openai/threads/{thread_id}/runs", json=body, headers=_auth(user), timeout=30
    ) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.json()
        for event in _events(r.iter_lines()):
            seen.append(event)
            if stop_after_deltas and sum(1 for e in seen if e[1] == "thread.message.delta") == stop_after_deltas:
                break
    return 200, seen


def test_two_runs_on_one_thread_from_two_instances_one_409_never_two_upstream(cluster):
    thread_id = cluster.thread_with("hello [fake duration=3]")  # long enough for both to meet on a busy machine
    before = cluster.runs_created()
    path = f"/api/openai/threads/{thread_id}/runs"

    def run(i):
        return call("POST", cluster.instance_url(i) + path, {"assistant_type": "curator"}, _auth())

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(run, [0, 1]))
    assert sorted(status for status, _, _ in answers) == [200, 409]
    assert cluster.runs_created() - before == 1


def test_an_idempotent_retry_on_another_instance_is_replayed(cluster):
    thread_id = cluster.thread_with("hello [fake duration=0.3]")
    before = cluster.runs_created()
    path = f"/api/openai/threads/{thread_id}/runs"
    key = {"Idempotency-Key": "scale-out-retry-1"}
    first = call("POST", cluster.instance_url(1) + path, {"assistant_type": "curator"}, _auth(**key))
    again = call("POST", cluster.instance_url(2) + path, {"assistant_type": "curator"}, _auth(**key))
    assert first[0] == again[0] == 200
    assert again[2]["id"] == first[2]["id"] and again[1]["Idempotent-Replayed"] == "true"
    assert cluster.runs_created() - before == 1


def test_run_starts_are_counted_once_across_instances(cluster):
    path = "/api/openai/threads/conv_" + "0" * 48 + "/runs"  # no such thread: a 404, counted all the same
    statuses = [
        call("POST", cluster.instance_url(i % INSTANCES) + path, {"assistant_type": "curator"}, _auth("limited"))[0]
        for i in range(RUNS_PER_MINUTE + 1)
    ]
    assert statuses == [404] * RUNS_PER_MINUTE + [429]


def test_a_stream_cut_on_one_instance_is_read_to_its_end_on_another(cluster):
    thread_id = cluster.thread_with(SLOW)
    status, seen = _stream(cluster.instance_url(0), thread_id, stop_after_deltas=2)
    assert status == 200
    run_id = seen[0][2]["id"]
    path = f"{cluster.instance_url(1)}/api/openai/threads/{thread_id}/runs/{run_id}/events"
    with httpx2.stream("GET", path, headers=_auth(**{"Last-Event-ID": str(seen[-1][0])}), timeout=30) as r:
        assert r.status_code == 200
        rest = list(_events(r.iter_lines()))
    assert [e[0] for e in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    assert rest[-1][1] == "done" and rest[-2][1] == "thread.run.completed"
    assert _text(seen) and _text(rest)
    assert _text(seen) + _text(rest) == cluster.stored_reply(thread_id)


def _one_run(cluster, user, thread_id, streamed):
    """One run through nginx: ("ok", reply text) or ("broken", why)."""
    try:
        if streamed:
            status, events = _stream(cluster.url, thread_id, user)
            if status == 200 and events and events[-1][1] == "done" and events[-2][1] == "thread.run.completed":
                return "ok", _text(events)
            return "broken", f"{status} {events[-2:] if status == 200 else events}"
        status, _, body = call(
            "POST", f"{cluster.url}/api/openai/threads/{thread_id}/runs", {"assistant_type": "curator"}, _auth(user)
        )
        return ("ok", None) if status == 200 and body["status"] == "completed" else ("broken", f"{status} {body}")
    except (httpx2.HTTPError, OSError) as error:  # the connection died with the instance
        return "broken", repr(error)


def test_one_instance_killed_mid_load_the_others_finish_and_nothing_is_recorded_twice(cluster):
    users = [f"user{i}" for i in range(12)]
    before = cluster.runs_created()
    during = [(user, cluster.thread_with(SLOW, user)) for user in users]
    after = [(user, cluster.thread_with("hello again [fake duration=0.5]", user)) for user in users]

    def kill_soon():
        # Once every run of the first wave exists upstream (each 1.5 s long), some wait on instance 2.
        wait_until(lambda: cluster.runs_created() - before >= len(users), 20, "the first wave", interval=0.05)
        cluster.instances[2].stop(signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with ThreadPoolExecutor(len(users)) as pool:
        first = list(pool.map(lambda i: _one_run(cluster, *during[i], streamed=i % 2 == 0), range(len(users))))
        killer.join()
        second = list(pool.map(lambda i: _one_run(cluster, *after[i], streamed=i % 2 == 1), range(len(users))))

    broken = [why for outcome, why in first if outcome == "broken"]
    assert 1 <= len(broken) <= len(users) // INSTANCES + 1, broken  # the dead instance's share, no more
    assert all(outcome == "ok" for outcome, _ in second), second  # nginx leaves the dead instance out
    for (user, thread_id), (outcome, text) in zip(during + after, first + second, strict=True):
        if outcome == "ok":
            reply = cluster.stored_reply(thread_id, user)
            assert text is None or text == reply

    engine = sa.create_engine(cluster.database_url)
    try:
        with engine.connect() as conn:
            runs = sa.Table("runs", sa.MetaData(), autoload_with=conn)
            thread_ids = [thread_id for _, thread_id in during + after]
            per_thread = conn.execute(
                sa.select(runs.c.thread_id, sa.func.count())
                .where(runs.c.thread_id.in_(thread_ids))
                .group_by(runs.c.thread_id)
            ).all()
    finally:
        engine.dispose()
    assert all(count == 1 for _, count in per_thread), per_thread  # never a second run for one request
    assert len(per_thread) >= len(thread_ids) - len(broken)
    assert cluster.runs_created() - before <= len(thread_ids)
    # The dead instance's runs are adopted by a survivor (its pids are gone on this host), which ends
    # and records them once and frees their threads: each then has its reply and takes a new run.
    for (user, thread_id), (outcome, _) in zip(during, first, strict=True):
        if outcome == "broken":
            path = f"{cluster.url}/api/openai/threads/{thread_id}/runs"

            def new_run(path=path, user=user):
                status, _, body = call("POST", path, {"assistant_type": "curator"}, _auth(user))
                assert status in (200, 409), body
                return status == 200

            wait_until(new_run, 20, "the dead instance's thread to take a new run", interval=0.5)
            status, _, listed = call("GET", f"{path.removesuffix('/runs')}/messages?limit=10", None, _auth(user))
            replies = [m for m in listed["data"] if m["role"] == "assistant"]
            assert len(replies) <= 2 and len({m["run_id"] for m in replies}) == len(replies), replies

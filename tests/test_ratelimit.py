"""Per-user rate limits: on starting runs and on every API call; 401 before counting; health never limited."""

from __future__ import annotations

import pytest

from app.settings import ConfigError, load_settings
from tests.helpers import RUN_CREATE, Api, upstream_calls


def _runs_started_upstream(fake) -> int:
    return upstream_calls(fake, *RUN_CREATE.values())


def _assert_429(response):
    assert response.status_code == 429
    assert set(response.json) == {"error"} and "Too many" in response.json["error"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60
    assert response.headers.get("x-should-retry") != "false"  # nothing was started: a retry is safe


def test_run_limit_refuses_the_next_run_and_starts_nothing_upstream(make_app, fake):
    app = make_app(RATELIMIT_RUNS="2/minute")
    alice = Api(app.test_client(), "alice-token-0001")
    thread = alice.new_thread()
    for _ in range(2):
        assert alice.run(thread).status_code == 200
    started = _runs_started_upstream(fake)
    assert started == fake.stats()["runs_created"] == 2

    refused = alice.run(thread)
    _assert_429(refused)
    # The limit is shared by both route prefixes, and an Idempotency-Key does not get round it.
    _assert_429(alice.under("/api/assistants/curator").post(f"/threads/{thread}/runs", json={}))
    keyed = {"Idempotency-Key": "k-1"}
    _assert_429(alice.post(f"/threads/{thread}/runs", json={"assistant_type": "curator"}, headers=keyed))
    assert _runs_started_upstream(fake) == 2 and fake.stats()["runs_created"] == 2

    # Other calls are not run starts, and another user has a budget of their own.
    assert alice.get(f"/threads/{thread}/messages").status_code == 200
    bob = alice.as_user("bob")
    bob_thread = bob.new_thread()
    assert bob.run(bob_thread).status_code == 200
    assert fake.stats()["runs_created"] == 3


def test_instances_sharing_redis_share_the_budget(make_app, fake, redis_url):
    first, second = (make_app(RATELIMIT_RUNS="2/minute", RATELIMIT_STORAGE_URI=redis_url) for _ in range(2))
    alice_first, alice_second = (Api(app.test_client(), "alice-token-0001") for app in (first, second))
    thread = alice_first.new_thread()
    assert alice_first.run(thread).status_code == 200
    assert alice_second.run(thread).status_code == 200
    _assert_429(alice_first.run(thread))
    _assert_429(alice_second.run(thread))
    assert fake.stats()["runs_created"] == 2
    bob = Api(second.test_client(), "bob-token-0002")
    assert bob.run(bob.new_thread()).status_code == 200


def test_overall_limit_counts_every_api_call_per_user(make_app):
    app = make_app(RATELIMIT_DEFAULT="3/minute")
    alice = Api(app.test_client(), "alice-token-0001")
    thread = alice.new_thread()
    assert alice.get(f"/threads/{thread}").status_code == 200
    assert alice.get(f"/threads/{thread}/messages").status_code == 200
    _assert_429(alice.get(f"/threads/{thread}"))
    _assert_429(alice.under("/api/assistants/tutor").post("/threads", json={}))

    bob = alice.as_user("bob")
    assert bob.post("/threads", json={}).status_code == 200
    client = app.test_client()
    for _ in range(5):
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 200


def test_unauthenticated_calls_get_401_and_spend_no_budget(make_app):
    app = make_app(RATELIMIT_DEFAULT="2/minute")
    client = app.test_client()
    for headers in ({}, {"Authorization": "Bearer not-a-token-at-all"}, {"Authorization": "Basic YWxpY2U6eA=="}):
        for _ in range(3):
            answer = client.post("/api/openai/threads", json={}, headers=headers)
            assert answer.status_code == 401, answer.json
    alice = Api(client, "alice-token-0001")
    assert alice.post("/threads", json={}).status_code == 200
    assert alice.post("/threads", json={}).status_code == 200
    _assert_429(alice.post("/threads", json={}))


def test_preflight_and_unknown_routes_are_not_limited(make_app):
    app = make_app(RATELIMIT_DEFAULT="1/minute")
    client = app.test_client()
    preflight = {"Origin": "http://localhost:8080", "Access-Control-Request-Method": "POST"}
    for _ in range(3):
        assert client.options("/api/openai/threads", headers=preflight).status_code == 200
        assert client.get("/api/openai/no-such-route").status_code == 404
    alice = Api(client, "alice-token-0001")
    assert alice.post("/threads", json={}).status_code == 200
    _assert_429(alice.post("/threads", json={}))


def test_defaults_and_off(base_env, make_app):
    unset = {k: v for k, v in base_env.items() if not k.startswith("RATELIMIT_")}
    settings = load_settings(unset)
    assert (settings.ratelimit_runs, settings.ratelimit_default) == ("30/minute", "600/minute")
    assert settings.ratelimit_storage_uri == "memory://"
    off = load_settings({**unset, "RATELIMIT_RUNS": "off", "RATELIMIT_DEFAULT": "off"})
    assert off.ratelimit_runs is None and off.ratelimit_default is None
    alice = Api(make_app(RATELIMIT_RUNS="off", RATELIMIT_DEFAULT="off").test_client(), "alice-token-0001")
    thread = alice.new_thread()
    assert alice.run(thread).status_code == 200
    assert alice.run(thread).status_code == 200


@pytest.mark.parametrize(
    "name,value",
    [("RATELIMIT_RUNS", "lots"), ("RATELIMIT_DEFAULT", "10/fortnight"), ("RATELIMIT_STORAGE_URI", "memcached://x:1")],
)
def test_bad_limit_settings_name_the_variable(base_env, name, value):
    with pytest.raises(ConfigError, match=name):
        load_settings({**base_env, name: value})


def test_memory_windows_are_moving_windows():
    from limits import parse

    from app.ratelimit import MemoryWindows

    now = [1000.0]
    windows = MemoryWindows(clock=lambda: now[0])
    item = parse("2/minute")
    assert windows.hit(item, "k") and windows.hit(item, "k")
    assert not windows.hit(item, "k")  # a refused call is not counted
    assert windows.reset_at(item, "k") == 1060.0
    now[0] = 1059.9
    assert not windows.hit(item, "k")
    now[0] = 1060.0  # the first call is exactly a minute old: still in the window, as in `limits`
    assert not windows.hit(item, "k")
    now[0] = 1060.1  # both calls have left the window
    assert windows.hit(item, "k") and windows.hit(item, "k") and not windows.hit(item, "k")
    assert windows.hit(item, "other")

"""A rate limit means what it says under the shipped gunicorn (gevent, two workers, memory:// storage): the
workers of one master count in one shared file, so exactly N calls pass before the first 429."""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from app.store.db import upgrade
from harness.servers import children_of, start_fake_upstream, start_gunicorn, wait_until
from tests.helpers import DEPLOY_TOKEN, DEPLOY_UPSTREAM_KEY, call, gunicorn_env

LIMIT = 5
# One user per test: a budget spent in one test stays spent for the minute.
TOKENS = {"alice": DEPLOY_TOKEN, "bob": "bob-workers-token-0002", "carol": "carol-workers-token-0003"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """gunicorn with the shipped config, two workers and RATELIMIT_DEFAULT=5/minute in memory://."""
    directory = tmp_path_factory.mktemp("ratelimit-workers")
    upstream, upstream_url = start_fake_upstream(directory, "--api-key", DEPLOY_UPSTREAM_KEY)
    db = directory / "backend.db"
    upgrade(f"sqlite:///{db}")
    (directory / "metrics").mkdir()
    env = gunicorn_env(
        upstream_url,
        f"sqlite:///{db}",
        WEB_CONCURRENCY=2,
        API_TOKENS=",".join(f"{user}:{token}" for user, token in TOKENS.items()),
        RATELIMIT_DEFAULT=f"{LIMIT}/minute",
        RATELIMIT_STORAGE_URI=None,  # the default, memory://
        RATELIMIT_SHARED_FILE=None,  # named by gunicorn.conf.py
        PROMETHEUS_MULTIPROC_DIR=directory / "metrics",
    )
    gunicorn, port = start_gunicorn(directory, env)
    gunicorn.url = f"http://127.0.0.1:{port}"
    gunicorn.workers = wait_until(lambda: len(children_of(gunicorn.pid)) == 2 and children_of(gunicorn.pid), 10, "2")
    yield gunicorn
    gunicorn.stop()
    upstream.stop()


def _get_as(served, user_token: str):
    """A limited API call (a thread that does not exist: a 404 that still counts); (status, body)."""
    status, _, body = call(
        "GET", f"{served.url}/api/openai/threads/thread_nosuch", headers={"Authorization": f"Bearer {user_token}"}
    )
    return status, body


def _assert_refused_with_the_limit(status, body):
    assert status == 429, body
    assert body["error"].startswith(f"Too many requests: at most {LIMIT} per 1 minute per user"), body


def test_calls_served_by_both_workers_count_against_one_limit(served):
    first, second = sorted(served.workers)
    # Only the first worker can take connections, then only the second: each serves its share for sure.
    answers = []
    for paused, calls in ((second, 3), (first, 4)):
        os.kill(paused, signal.SIGSTOP)
        try:
            answers += [_get_as(served, TOKENS["bob"]) for _ in range(calls)]
        finally:
            os.kill(paused, signal.SIGCONT)
    statuses = [status for status, _ in answers]
    # Counted per worker, the second worker would have let 4 more through.
    assert statuses == [404] * LIMIT + [429] * 2, statuses
    _assert_refused_with_the_limit(*answers[-1])


def test_a_burst_across_both_workers_lets_exactly_the_limit_through(served):
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: _get_as(served, TOKENS["carol"]), range(12)))
    statuses = [status for status, _ in answers]
    assert sorted(statuses) == [404] * LIMIT + [429] * (12 - LIMIT), statuses
    for status, body in answers:
        if status == 429:
            _assert_refused_with_the_limit(status, body)
    # Another user has a budget of their own.
    assert _get_as(served, TOKENS["alice"])[0] == 404


def test_file_windows_are_moving_windows_shared_by_every_opener(tmp_path):
    from limits import parse

    from app.ratelimit import FileWindows

    now = [1000.0]
    path = str(tmp_path / "counters.db")
    one, other = (FileWindows(path, longest_expiry=60, clock=lambda: now[0]) for _ in range(2))
    item = parse("2/minute")
    assert one.hit(item, "k") and other.hit(item, "k")
    assert not one.hit(item, "k") and not other.hit(item, "k")  # a refused call is not counted
    assert one.reset_at(item, "k") == other.reset_at(item, "k") == 1060.0
    now[0] = 1060.0  # the first call is exactly a minute old: still in the window, as in `limits`
    assert not other.hit(item, "k")
    now[0] = 1060.1
    assert one.hit(item, "k") and other.hit(item, "k") and not one.hit(item, "k")
    assert other.hit(item, "another user")


@pytest.mark.parametrize(
    "name,value",
    [
        ("RATELIMIT_FAIL", "sometimes"),
        ("RATELIMIT_STORAGE_TIMEOUT_SECONDS", "0"),
        ("RATELIMIT_STORAGE_TIMEOUT_SECONDS", "soon"),
    ],
)
def test_bad_failure_settings_name_the_variable(name, value):
    from app.settings import ConfigError, load_settings

    env = {"OPENAI_BASE_URL": "offline", "ASSISTANT_CURATOR_MODEL": "gpt-4o", "AUTH_MODE": "none", name: value}
    with pytest.raises(ConfigError, match=name):
        load_settings(env)
    defaults = load_settings({k: v for k, v in env.items() if k != name})
    assert (defaults.ratelimit_fail, defaults.ratelimit_storage_timeout_seconds) == ("open", 0.3)

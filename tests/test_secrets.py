"""No secret leaves the backend: under every upstream failure the fake can produce, neither the
OpenAI key (whole, masked or in part), the API tokens nor the JWT secret appear in any answer
(body or header) or in any log line, whichever logger wrote it."""

from __future__ import annotations

import logging
import socket
import time

import jwt
import pytest

from fake_openai.app import mask_key
from tests.helpers import TOKENS, UPSTREAM_KEY, Api

WRONG_KEY = "sk-proj-WrongKeyZq8Xv3Lp9Tn2Rb7Yk4"
JWT_SECRET = "jwt-hs256-Hq7Wm2Kx9Pz4Vc8NfR3tLq6s"
NOT_THE_JWT_SECRET = "another-secret-of-a-decent-length-0000"
SECRETS = [UPSTREAM_KEY, WRONG_KEY, JWT_SECRET, *TOKENS.values()]


def _windows(secret: str, width: int = 8) -> set[str]:
    return {secret[i : i + width] for i in range(len(secret) - width + 1)}


def _fragments() -> set[str]:
    """What must never be seen: each secret, its masked forms, and pieces of it."""
    found = set(SECRETS)
    for key in (UPSTREAM_KEY, WRONG_KEY):
        found |= {mask_key(key), key[:12], key[-10:]}
    # The wrong key is the one the upstream echoes masked: its visible tail must not get out either.
    found.add(mask_key(WRONG_KEY).rsplit("*", 1)[-1])
    # The fake's key is partly plain words ("upstream"); the others are random enough to check every piece.
    for secret in (WRONG_KEY, JWT_SECRET, *TOKENS.values()):
        found |= _windows(secret)
    return found


class Watch:
    """Collects every answer the test gets, and everything written to logs and the terminal."""

    def __init__(self, capfd, caplog):
        self.capfd = capfd
        self.caplog = caplog
        self.answers: list[str] = []
        self.terminal: list[str] = []
        self.app_records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.DEBUG)
        handler.emit = self.app_records.append
        self.handler = handler

    def __call__(self, response):
        """Remember one answer (status, headers, body) and hand it back."""
        self.answers.append(f"{response.status}\n{response.headers}\n{response.get_data(as_text=True)}")
        return response

    def seen(self) -> str:
        self.terminal.extend(self.capfd.readouterr())
        records = [f"{r.getMessage()} {r.exc_text or ''}" for r in (*self.caplog.records, *self.app_records)]
        return "\n".join([*self.answers, *self.terminal, self.caplog.text, *records])

    def assert_clean(self, expected_app_lines: int = 1):
        """No secret anywhere; and the app's own log lines were really captured."""
        text = self.seen()
        assert len(self.app_records) >= expected_app_lines
        leaked = sorted(f for f in _fragments() if f in text)
        assert leaked == [], f"secret fragments seen: {leaked}"


@pytest.fixture
def watch(capfd, caplog):
    caplog.set_level(logging.DEBUG)  # the SDK's and the HTTP client's debug lines too
    watcher = Watch(capfd, caplog)
    app_logger = logging.getLogger("app")
    yield watcher
    app_logger.removeHandler(watcher.handler)


def _build(make_app, watch, **env):
    """An app whose log lines reach `watch` as well as stderr (which capfd captures)."""
    app = make_app(JWT_SECRET=JWT_SECRET, LOG_LEVEL="debug", **env)
    logger = logging.getLogger("app")
    logger.addHandler(watch.handler)  # after the app's own handler, so it sees what that one wrote
    return app


class Recorded(Api):
    """Alice's (or Bob's) client whose every answer goes through `watch`."""

    def __init__(self, app, watch, user="alice", headers=None):
        super().__init__(app.test_client(), TOKENS[user])
        self.watch = watch
        if headers is not None:
            self.headers = headers

    def _call(self, method, path, **kwargs):
        return self.watch(super()._call(method, path, **kwargs))


def _every_route(api, thread, run_id):
    """Call each route of the contract once on `thread`; return the answers."""
    return [
        api.post("/threads", json={"messages": [{"role": "user", "content": "hi"}]}),
        api.get(f"/threads/{thread}"),
        api.post(f"/threads/{thread}/messages", json={"role": "user", "content": "hello"}),
        api.get(f"/threads/{thread}/messages"),
        api.get(f"/threads/{thread}/messages?order=asc&limit=5"),
        api.run(thread),
        api.get(f"/threads/{thread}/runs/{run_id}"),
        api.post(f"/threads/{thread}/runs/{run_id}/cancel"),
        api.delete(f"/threads/{thread}"),
    ]


def test_a_rejected_key_answers_502_and_leaks_nothing(make_app, watch):
    good = Recorded(_build(make_app, watch), watch)
    thread = good.new_thread()
    good.say(thread, "hello")
    run_id = good.run(thread).json["id"]

    bad = Recorded(_build(make_app, watch, OPENAI_API_KEY=WRONG_KEY), watch)
    answers = _every_route(bad, thread, run_id)
    # The ended run is answered from the record, without the upstream.
    assert [a.status_code for a in answers] == [502] * 6 + [200, 400, 502], [a.json for a in answers]
    for answer in answers:
        if answer.status_code == 502:
            assert "upstream configuration" in answer.json["error"].lower()
            assert answer.headers["x-should-retry"] == "false"
    watch.assert_clean()


@pytest.mark.parametrize("engine_name", ["assistants"])
def test_an_unknown_assistant_answers_502_and_leaks_nothing(make_app, fake, watch, engine_name):
    api = Recorded(_build(make_app, watch), watch)
    thread = api.new_thread()
    api.say(thread, "hello")
    fake.config.unknown_assistants = {"asst_curator"}
    answer = api.run(thread)
    assert answer.status_code == 502
    assert "upstream configuration" in answer.json["error"].lower()
    assert "asst_curator" not in answer.json["error"]  # details are for the log only
    assert fake.stats()["runs_created"] == 0
    watch.assert_clean()


@pytest.mark.parametrize("kind", ["500", "503", "429"])
def test_failing_upstream_leaks_nothing(make_app, fake, watch, kind):
    api = Recorded(_build(make_app, watch), watch)
    thread = api.new_thread()
    api.say(thread, "hello [fake duration=0.2]")
    fake.config.fail_kind = kind
    fake.config.fail_every_nth_poll = 2
    run = api.run(thread)
    assert run.status_code == 200, run.json  # retried inside the deadline
    fake.config.fail_every_nth_poll = 1
    unavailable = api.get(f"/threads/{thread}/runs/run_not_known_here")
    assert unavailable.status_code == 503, unavailable.json
    assert int(unavailable.headers["Retry-After"]) >= 1
    watch.assert_clean()


def test_timeouts_leak_nothing(make_app, watch):
    api = Recorded(_build(make_app, watch, RUN_TIMEOUT_SECONDS=1, UPSTREAM_TIMEOUT_SECONDS=0.3), watch)
    thread = api.new_thread()
    api.say(thread, "think for ever [fake status=never]")
    timed_out = api.run(thread)
    assert timed_out.status_code == 408
    assert timed_out.json["error"] == "Run timeout exceeded 1 seconds"
    watch.assert_clean()


def test_a_silent_or_closed_upstream_leaks_nothing(make_app, watch):
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # accepts connections into the backlog, never answers
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()
    try:
        for port in (silent.getsockname()[1], closed_port):
            env = {"OPENAI_BASE_URL": f"http://127.0.0.1:{port}/v1", "UPSTREAM_TIMEOUT_SECONDS": 0.2}
            api = Recorded(_build(make_app, watch, RUN_TIMEOUT_SECONDS=1, **env), watch)
            started = time.monotonic()
            answer = api.post("/threads", json={})
            assert answer.status_code == 503, answer.json
            assert int(answer.headers["Retry-After"]) >= 1
            assert time.monotonic() - started < 10
    finally:
        silent.close()
    watch.assert_clean(expected_app_lines=2)


def test_jwt_failures_leak_neither_the_secret_nor_the_token(make_app, watch):
    app = _build(make_app, watch, AUTH_MODE="jwt", OPENAI_API_KEY=WRONG_KEY)
    now = int(time.time())
    good = jwt.encode({"sub": "alice", "exp": now + 60}, JWT_SECRET, algorithm="HS256")
    tokens = {
        "good": good,
        "expired": jwt.encode({"sub": "alice", "exp": now - 60}, JWT_SECRET, algorithm="HS256"),
        "forged": jwt.encode({"sub": "alice", "exp": now + 60}, NOT_THE_JWT_SECRET, algorithm="HS256"),
        "none": jwt.encode({"sub": "alice", "exp": now + 60}, None, algorithm="none"),
        "garbage": "a.b.c",
    }
    for name, token in tokens.items():
        api = Recorded(app, watch, headers={"Authorization": f"Bearer {token}"})
        answer = api.post("/threads", json={})
        assert answer.status_code == (502 if name == "good" else 401), (name, answer.json)
    seen = watch.seen()
    assert good not in seen and good.split(".")[2] not in seen
    watch.assert_clean(expected_app_lines=5)


def test_the_log_redactor_takes_out_every_secret_the_longest_where_they_overlap():
    import random
    import re

    from app.redaction import redact, redactor

    secrets = ["abc", "abcdef", "a.b", "x*y", "bench-token-0001", "bench-token-0010", "", "sk-live"]
    apply = redactor(secrets)
    assert apply("abcdefg abc ab axb a.b x*y xy") == "[redacted]g [redacted] ab axb [redacted] [redacted] xy"
    assert apply("bench-token-0010 bench-token-001 bench-token-00010") == "[redacted] bench-token-001 [redacted]0"
    assert apply("a key sk-other-123456") == "a key [redacted]"  # no secret, but shaped as a key
    # The same as one alternative per secret, longest first, then the keys' shape.
    by_length = sorted((s for s in secrets if s), key=len, reverse=True)
    one_by_one = re.compile("|".join(re.escape(s) for s in by_length))
    pieces = [*by_length, "a", "b", "c", "d", ".", "*", "-", "0", "1", " ", "bench-token-00", "sk-"]
    chosen = random.Random(7)
    for _ in range(2000):
        text = "".join(chosen.choice(pieces) for _ in range(12))
        assert apply(text) == redact(one_by_one.sub("[redacted]", text))

"""The production chain for real: nginx -> gunicorn (gevent, 2 workers, as shipped; and gthread) -> the fake upstream.

Every server is a child process started here, on free loopback ports, with the
shipped gunicorn.conf.py and deploy/nginx.conf (rendered for a short deadline).
"""

from __future__ import annotations

import re
import runpy
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from flask import request
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.environment import CANCEL_GRACE_SECONDS
from app.settings import Settings, inflight_limit, load_settings
from app.store.db import upgrade
from deploy.nginx_site import SITE, read_timeout
from harness.servers import (
    ROOT,
    children_of,
    free_port,
    start_fake_upstream,
    start_gunicorn,
    start_nginx,
    wait_until,
)
from tests.helpers import DEPLOY_TOKEN as TOKEN
from tests.helpers import DEPLOY_UPSTREAM_KEY, call, gunicorn_env

RUN_TIMEOUT = 5  # seconds; runs of RUN_SECONDS answer 200, "never" runs the app's 408
RUN_SECONDS = 3
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Stack:
    """nginx -> gunicorn -> the fake upstream, and what the tests ask of them."""

    def __init__(self, directory: Path, upstream_url: str, database_url: str, gunicorn_args=(), **env):
        self.directory = directory
        self.upstream_url = upstream_url
        self.metrics_dir = directory / "metrics"
        self.metrics_dir.mkdir()
        self.env = gunicorn_env(
            upstream_url,
            database_url,
            RUN_TIMEOUT_SECONDS=RUN_TIMEOUT,
            PROMETHEUS_MULTIPROC_DIR=self.metrics_dir,
            **env,
        )
        self.gunicorn = self.nginx = None
        try:
            self.gunicorn, self.gunicorn_port = start_gunicorn(directory, self.env, *gunicorn_args)
            self.nginx, port = start_nginx(directory, self.gunicorn_port, RUN_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.url = f"http://127.0.0.1:{port}"
        self.api = f"{self.url}/api/openai"

    def stop(self):
        for child in (self.nginx, self.gunicorn):
            if child is not None:
                child.stop()

    def thread_with(self, text: str) -> str:
        """A new thread whose first message scripts its run (e.g. "[fake duration=3]")."""
        status, _, body = call("POST", f"{self.api}/threads", {"messages": [{"role": "user", "content": text}]}, AUTH)
        assert status == 200, body
        return body["id"]

    def run(self, thread_id: str, headers=None):
        """POST .../runs; returns (status, headers, body, seconds taken)."""
        started = time.monotonic()
        status, answer_headers, body = call(
            "POST", f"{self.api}/threads/{thread_id}/runs", {"assistant_type": "curator"}, {**AUTH, **(headers or {})}
        )
        return status, answer_headers, body, time.monotonic() - started

    def runs_created(self) -> int:
        return call("GET", f"{self.upstream_url}/_fake/stats")[2]["runs_created"]

    def metric(self, name: str, **labels) -> float:
        """A sample's value from /metrics (through nginx), 0 when absent."""
        status, _, text = call("GET", f"{self.url}/metrics")
        assert status == 200, text
        return sample(text_string_to_metric_families(text), name, labels)

    def app_log(self) -> str:
        return self.gunicorn.log()

    def nginx_log(self) -> str:
        return (self.directory / "logs" / "backend.access.log").read_text()


def sample(families, name: str, labels: dict) -> float:
    for family in families:
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


@pytest.fixture(scope="module")
def deploy_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy")


@pytest.fixture(scope="module")
def upstream(deploy_dir):
    """The fake OpenAI upstream as its own process, for the whole module."""
    child, url = start_fake_upstream(deploy_dir, "--default-duration", "0.2", "--api-key", DEPLOY_UPSTREAM_KEY)
    yield url
    child.stop()


@pytest.fixture(scope="module")
def template_db(deploy_dir):
    path = deploy_dir / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _database(directory: Path, template: Path) -> str:
    copy = directory / "backend.db"
    copy.write_bytes(template.read_bytes())
    return f"sqlite:///{copy}"


def _stack(tmp_path_factory, upstream, template_db, name, gunicorn_args=(), **env) -> Stack:
    directory = tmp_path_factory.mktemp(name)
    return Stack(directory, upstream, _database(directory, template_db), gunicorn_args, **env)


# gevent is shipped (gunicorn.conf.py's defaults); gthread stays an alternative, and the same tests run under it.
WORKER_ARGS = {"gevent": (), "gthread": ("-k", "gthread")}


@pytest.fixture(scope="module", params=sorted(WORKER_ARGS))
def stack(request, tmp_path_factory, upstream, template_db):
    """Two workers (of 24 threads for gthread: each takes up to 21 waiting runs, enough for 20)."""
    s = _stack(
        tmp_path_factory, upstream, template_db, "main", WORKER_ARGS[request.param], WEB_CONCURRENCY=2, WEB_THREADS=24
    )
    s.worker_class = request.param
    yield s
    s.stop()


def _in_parallel(count: int, task):
    with ThreadPoolExecutor(max_workers=count) as pool:
        return [f.result() for f in [pool.submit(task, i) for i in range(count)]]


def _twenty_waiting_runs(stack: Stack, then) -> list:
    """Start 20 runs of RUN_SECONDS, call `then()` once all 20 wait upstream, and return their answers."""
    threads = _in_parallel(20, lambda _: stack.thread_with(f"[fake duration={RUN_SECONDS}] hello"))
    before = stack.runs_created()
    with ThreadPoolExecutor(max_workers=20) as pool:
        futures = [pool.submit(stack.run, t) for t in threads]
        wait_until(lambda: stack.runs_created() - before >= 20, 10, "20 runs to start upstream")
        then()
        return [f.result() for f in futures]


# --- the configuration files agree with each other -------------------------------------------------------


def _gunicorn_conf(monkeypatch, run_timeout) -> dict:
    """gunicorn.conf.py's settings for this deadline and otherwise its defaults (an empty value wins over .env)."""
    monkeypatch.setenv("RUN_TIMEOUT_SECONDS", str(run_timeout))
    names = ("GRACEFUL_TIMEOUT", "KEEPALIVE", "WEB_THREADS", "WEB_CONCURRENCY", "WEB_CONNECTIONS", "WEB_WORKER_CLASS")
    for name in names:
        monkeypatch.setenv(name, "")
    return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


@pytest.mark.parametrize("run_timeout", [3, 60, 600])
def test_the_timeout_chain_holds_for_any_deadline(monkeypatch, run_timeout):
    conf = _gunicorn_conf(monkeypatch, run_timeout)
    assert conf["CANCEL_GRACE_SECONDS"] == CANCEL_GRACE_SECONDS
    assert conf["worker_class"] == "gevent" and not conf.get("preload_app")
    assert run_timeout + CANCEL_GRACE_SECONDS < conf["graceful_timeout"] < read_timeout(run_timeout)
    assert read_timeout(run_timeout) >= run_timeout + 30


def test_the_shipped_files_match_the_defaults(monkeypatch):
    site = SITE.read_text()
    defaults = Settings(assistant_types=())
    conf = _gunicorn_conf(monkeypatch, defaults.run_timeout_seconds)
    assert f"proxy_read_timeout {read_timeout(defaults.run_timeout_seconds)}s;" in site
    assert defaults.max_body_bytes == 1024 * 1024 and "client_max_body_size 1m;" in site
    # Uploads: FILE_MAX_BYTES (20 MiB) and the multipart framing the backend allows around it.
    assert defaults.file_max_bytes == 20 * 1024 * 1024 and "client_max_body_size 20544k;" in site
    assert all("non_idempotent" not in line for line in re.findall(r"^\s*proxy_next_upstream .*$", site, re.MULTILINE))
    # Upstream keep-alive is off; the commented-out timeout for it stays below gunicorn's keepalive.
    assert not re.search(r"^\s*keepalive \d+;", site, re.MULTILINE)
    assert int(re.search(r"keepalive_timeout (\d+)s;", site).group(1)) < conf["keepalive"]
    assert "proxy_set_header X-Request-ID $backend_request_id;" in site
    assert inflight_limit(32) == 28 and inflight_limit(4) == 2 and inflight_limit(2) == 1
    unit = (ROOT / "deploy" / "backend.service").read_text()
    assert int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.MULTILINE).group(1)) > conf["graceful_timeout"]
    assert re.search(r"^ExecStart=.*gunicorn -c gunicorn.conf.py$", unit, re.MULTILINE)


@pytest.mark.parametrize(
    "proxies, forwarded_for, remote_addr, scheme",
    [
        (0, "203.0.113.9", "127.0.0.1", "http"),
        (1, "203.0.113.9", "203.0.113.9", "https"),
        (1, "198.51.100.1, 203.0.113.9", "203.0.113.9", "https"),
    ],
)
def test_forwarded_headers_are_trusted_from_the_configured_proxies_only(
    tmp_path, proxies, forwarded_for, remote_addr, scheme
):
    env = gunicorn_env("http://127.0.0.1:9", f"sqlite:///{tmp_path}/unused.db", FORWARDED_PROXIES=proxies)
    app = create_app(load_settings(env))

    @app.get("/_seen")
    def seen():
        return {"remote_addr": request.remote_addr, "scheme": request.scheme}

    answer = app.test_client().get(
        "/_seen",
        headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"},
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    assert answer.json == {"remote_addr": remote_addr, "scheme": scheme}


# --- gunicorn refuses what would cut its own waits ------------------------------------------------------


def _gunicorn_once(tmp_path, upstream, template_db, *args, **env):
    port = free_port()
    environment = gunicorn_env(upstream, _database(tmp_path, template_db), PORT=port, **env)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return done, time.monotonic() - started


@pytest.mark.parametrize(
    "args, env, setting",
    [
        (["-k", "sync"], {}, "worker_class"),
        (["--graceful-timeout", "10"], {}, "graceful_timeout"),
        ([], {"GRACEFUL_TIMEOUT": "60", "RUN_TIMEOUT_SECONDS": "60"}, "graceful_timeout"),
        (["-k", "gthread", "--threads", "1"], {}, "threads"),
        (["--preload"], {}, "preload_app"),
        ([], {"RUN_TIMEOUT_SECONDS": "soon"}, "RUN_TIMEOUT_SECONDS"),
    ],
)
def test_gunicorn_refuses_settings_that_cut_waits(tmp_path, upstream, template_db, args, env, setting):
    done, seconds = _gunicorn_once(tmp_path, upstream, template_db, *args, **env)
    assert done.returncode == 3
    refusals = [line for line in done.stderr.splitlines() if "refusing to start" in line]
    assert len(refusals) == 1 and f"refusing to start: {setting}:" in refusals[0], done.stderr
    assert "Traceback" not in done.stderr and "Booting worker" not in done.stderr
    assert seconds < 10


def test_a_configuration_error_of_the_app_stops_gunicorn_before_any_worker(tmp_path, upstream, template_db):
    done, _ = _gunicorn_once(tmp_path, upstream, template_db, AUTH_MODE="sometimes")
    assert done.returncode == 3, done.stderr
    assert "configuration error: AUTH_MODE:" in done.stderr
    # Checked before any worker is forked: none boots, none restarts in a loop.
    assert "Booting worker" not in done.stderr and "Traceback" not in done.stderr


# --- through nginx -----------------------------------------------------------------------------------------


def test_gunicorn_runs_the_worker_class_it_was_given(stack):
    assert f"Using worker: {stack.worker_class}" in stack.app_log()


def test_a_run_of_several_seconds_answers_200_through_nginx(stack):
    status, _, body, seconds = stack.run(stack.thread_with(f"[fake duration={RUN_SECONDS}] hello"))
    assert status == 200, body
    assert body["status"] == "completed"
    assert seconds >= RUN_SECONDS


def test_a_streamed_run_arrives_word_by_word_through_nginx(stack):
    thread_id = stack.thread_with("[fake duration=2] one two three four five six")
    seen = []
    body = {"assistant_type": "curator", "stream": True}
    with httpx2.stream("POST", f"{stack.api}/threads/{thread_id}/runs", json=body, headers=AUTH, timeout=30) as answer:
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
        for line in answer.iter_lines():
            if line.startswith("event: "):
                seen.append((line[len("event: ") :], time.monotonic()))
    assert [name for name, _ in seen[-2:]] == ["thread.run.completed", "done"]
    deltas = [at for name, at in seen if name == "thread.message.delta"]
    assert len(deltas) == 7  # "Echo: one two three four five six", a word each
    assert seen[-2][1] - deltas[0] > 1.0  # nginx passed the words on as they came, not at the end


def test_a_never_ending_run_gets_the_apps_408_not_nginxs_504(stack):
    status, headers, body, seconds = stack.run(
        stack.thread_with("[fake status=never] hello"), {"Origin": "http://localhost:8080"}
    )
    assert status == 408, body
    assert body["error"] == f"Run timeout exceeded {RUN_TIMEOUT} seconds"
    assert body["runStatus"] == body["run"]["status"] == "cancelled"  # as it is after the cancel
    assert headers["x-should-retry"] == "false"
    assert headers["Access-Control-Allow-Origin"] == "http://localhost:8080"
    assert seconds >= RUN_TIMEOUT


def _multipart_upload(size: int) -> tuple[bytes, dict]:
    boundary = "deploy-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nassistants\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n'
        "Content-Type: text/plain\r\n\r\n"
    ).encode()
    body += b"a" * size + f"\r\n--{boundary}--\r\n".encode()
    return body, {**AUTH, "Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_an_upload_over_max_body_bytes_passes_nginx_up_to_file_max_bytes(stack):
    body, headers = _multipart_upload(2 * 1024 * 1024)
    status, _, answer = call("POST", f"{stack.api}/files", body, headers)
    assert status == 200 and answer["bytes"] == 2 * 1024 * 1024
    # Past FILE_MAX_BYTES but inside nginx's allowance for the framing: the backend's own 413.
    body, headers = _multipart_upload(20 * 1024 * 1024 + 1)
    status, _, answer = call("POST", f"{stack.url}/v1/files", body, headers)
    assert status == 413 and "FILE_MAX_BYTES" in answer["error"]["message"]


def test_a_body_over_the_limit_is_a_json_413(stack):
    too_large = b"{" + b" " * (1024 * 1024 + 10) + b"}"
    status, _, body = call("POST", f"{stack.api}/threads", too_large, AUTH)
    assert status == 413
    assert body == {"error": "Request body too large."}
    # nginx's own answer under /v1 has OpenAI's shape, as the backend's there.
    status, _, body = call("POST", f"{stack.url}/v1/threads", too_large, AUTH)
    assert status == 413
    assert body["error"] == {
        "message": "Request body too large.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


def test_the_request_id_is_in_nginxs_log_and_the_apps(stack):
    status, headers, _ = call("GET", f"{stack.url}/healthz")
    generated = headers["X-Request-ID"]
    assert status == 200 and re.fullmatch(r"[0-9a-f]{32}", generated)  # nginx's $request_id
    status, headers, _ = call("GET", f"{stack.url}/readyz", headers={"X-Request-ID": "client-chosen-id-42"})
    assert status == 200 and headers["X-Request-ID"] == "client-chosen-id-42"
    for request_id in (generated, "client-chosen-id-42"):
        wait_until(lambda rid=request_id: f"rid={rid} app_rid={rid}" in stack.nginx_log(), 5, "nginx's access line")
        wait_until(lambda rid=request_id: f"[{rid}]" in stack.app_log(), 5, "the app's access line")


def test_metrics_count_the_runs_of_both_workers(stack):
    before = stack.metric("backend_runs_total", status="completed")
    sent = 0
    for _ in range(4):  # the kernel picks the worker: send until both have answered runs
        threads = _in_parallel(8, lambda _: stack.thread_with("[fake duration=0.5] hello"))
        answers = _in_parallel(8, lambda i, threads=threads: stack.run(threads[i]))
        assert [a[0] for a in answers] == [200] * 8
        sent += 8
        per_worker = _completed_runs_per_worker(stack.metrics_dir)
        if len([n for n in per_worker.values() if n]) >= 2:
            break
    assert len([n for n in per_worker.values() if n]) >= 2, per_worker
    total = stack.metric("backend_runs_total", status="completed")
    assert total - before == sent
    assert total == sum(per_worker.values())
    assert stack.metric("backend_runs_in_flight") == 0
    assert stack.metric("backend_run_wait_seconds_count") >= sent
    assert stack.metric("backend_run_polls_count") >= sent


def _completed_runs_per_worker(directory: Path) -> dict[int, float]:
    counts = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        counts[pid] = sample(MultiProcessCollector.merge([str(path)]), "backend_runs_total", {"status": "completed"})
    return counts


def test_a_reload_while_20_runs_wait_loses_none(stack):
    old_workers = children_of(stack.gunicorn.pid)
    before = stack.metric("backend_runs_total", status="completed")
    answers = _twenty_waiting_runs(stack, lambda: stack.gunicorn.send(signal.SIGHUP))
    assert [a[0] for a in answers] == [200] * 20, [a[2] for a in answers if a[0] != 200]
    assert {a[2]["status"] for a in answers} == {"completed"}
    wait_until(lambda: not (children_of(stack.gunicorn.pid) & old_workers), 15, "the old workers to exit")
    assert len(children_of(stack.gunicorn.pid)) == 2
    # The new workers serve, and the old workers' runs still count.
    status, _, body, _ = stack.run(stack.thread_with("hello after the reload"))
    assert status == 200, body
    assert stack.metric("backend_runs_total", status="completed") - before == 21


def test_a_stop_while_20_runs_wait_loses_none(tmp_path_factory, upstream, template_db):
    s = _stack(tmp_path_factory, upstream, template_db, "stop", WEB_CONCURRENCY=2, WEB_THREADS=24)
    try:
        answers = _twenty_waiting_runs(s, lambda: s.gunicorn.send(signal.SIGTERM))
        assert [a[0] for a in answers] == [200] * 20, [a[2] for a in answers if a[0] != 200]
        assert s.gunicorn.wait(timeout=30) == 0
        # With gunicorn gone, nginx's own answer is JSON too, and says not to retry.
        status, headers, body = call("GET", f"{s.url}/healthz")
        assert status == 502 and headers["x-should-retry"] == "false" and isinstance(body["error"], str)
        status, headers, body = call("GET", f"{s.url}/v1/threads/thread_1", headers=AUTH)
        assert status == 502 and headers["x-should-retry"] == "false" and body["error"]["type"] == "server_error"
    finally:
        s.stop()


@pytest.mark.parametrize("worker_class, width", [("gevent", "WEB_CONNECTIONS"), ("gthread", "WEB_THREADS")])
def test_past_capacity_a_503_comes_at_once_and_quick_requests_are_served(
    tmp_path_factory, upstream, template_db, worker_class, width
):
    # 4 connections (threads) per worker: 2 may wait for runs (settings.inflight_limit), 2 stay free;
    # 2 workers take 4 runs.
    s = _stack(
        tmp_path_factory, upstream, template_db, "capacity", WORKER_ARGS[worker_class], WEB_CONCURRENCY=2, **{width: 4}
    )
    try:
        threads = _in_parallel(6, lambda _: s.thread_with(f"[fake duration={RUN_SECONDS}] hello"))
        with ThreadPoolExecutor(max_workers=6) as pool:
            futures = [pool.submit(s.run, t) for t in threads]
            wait_until(lambda: sum(f.done() for f in futures) >= 2, RUN_SECONDS, "the first two answers")
            status, _, listed = call("GET", f"{s.api}/threads/{threads[0]}/messages", headers=AUTH, timeout=RUN_SECONDS)
            runs_still_waiting = sum(not f.done() for f in futures)
            answers = [f.result() for f in futures]
        assert status == 200 and listed["object"] == "list"
        assert runs_still_waiting >= 2  # the list was served while runs held their threads
        refused = [a for a in answers if a[0] == 503]
        served = [a for a in answers if a[0] == 200]
        assert len(refused) + len(served) == 6, [a[2] for a in answers]
        assert len(refused) >= 2 and 2 <= len(served) <= 4
        for _, headers, body, seconds in refused:
            assert headers["Retry-After"] and "no room" in body["error"]
            assert seconds < RUN_SECONDS  # answered without waiting for a run
    finally:
        s.stop()

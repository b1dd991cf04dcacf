"""Real servers for tests/test_deploy.py: the fake upstream, gunicorn and nginx as child processes.

Each listens on a free loopback port and writes its log to a file in the test's
directory; `stop()` always ends the process and closes its log.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from deploy.nginx_site import render

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
UPSTREAM_KEY = "sk-deploy-test-upstream-0123456789"
TOKEN = "alice-deploy-token-0001"
# Variables of the developer's own environment that must not leak into a test server.
_OWN = (
    "OPENAI_",
    "ASSISTANT_",
    "RUN_",
    "AUTH_",
    "API_TOKENS",
    "JWT_",
    "DATABASE_URL",
    "PROMETHEUS_",
    "WORKER_THREADS",
    "MAX_INFLIGHT_RUNS",
    "RATELIMIT_",
    "WEB_",
    "GRACEFUL_TIMEOUT",
    "KEEPALIVE",
    "BIND",
    "HOST",
    "PORT",
    "FORWARDED_",
    "LOG_",
)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll `predicate` until it returns something true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def call(method: str, url: str, body=None, headers=None, timeout: float = 60):
    """One HTTP request; returns (status, headers, parsed JSON or text), also for 4xx and 5xx."""
    data = None if body is None else json.dumps(body).encode() if not isinstance(body, bytes) else body
    headers = {"Content-Type": "application/json", **(headers or {})}
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, answer_headers, raw = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        with error:
            status, answer_headers, raw = error.code, error.headers, error.read()
    text = raw.decode("utf-8", "replace")
    try:
        return status, answer_headers, json.loads(text)
    except ValueError:
        return status, answer_headers, text


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Child:
    """A child process with its output in a log file."""

    def __init__(self, args, log_path: Path, env=None, cwd=ROOT):
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def send(self, sig) -> None:
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int:
        """End the process (SIGKILL if `sig` does not within `timeout`) and close its log."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


def _until_ready(child: Child, ready, what: str, more_log: Path | None = None) -> None:
    """Wait until `ready()`; if the child exits or never gets ready, stop it and fail with its log."""
    try:
        wait_until(lambda: child.process.poll() is not None or ready(), 30, what)
        assert child.process.poll() is None, f"{what} exited"
    except BaseException:
        child.stop(signal.SIGKILL, timeout=5)
        extra = more_log.read_text() if more_log and more_log.exists() else ""
        raise AssertionError(f"{what} did not start:\n{child.log()}{extra}") from None


def start_fake_upstream(directory: Path) -> tuple[Child, str]:
    """`python -m fake_openai` on a free port; returns it and its base URL (with /v1)."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "fake_openai",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--default-duration",
        "0.2",
        "--api-key",
        UPSTREAM_KEY,
    ]
    child = Child(args, directory / "upstream.log")
    _until_ready(child, lambda: accepts(port), "the fake upstream")
    return child, f"http://127.0.0.1:{port}"


def gunicorn_env(upstream_url: str, database_url: str, **overrides) -> dict:
    """The environment of a test deployment; `overrides` add to it (None removes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN)}
    env.update(
        OPENAI_API_KEY=UPSTREAM_KEY,
        OPENAI_BASE_URL=f"{upstream_url}/v1",
        ASSISTANT_CURATOR_MODEL="gpt-4o",
        ASSISTANT_CURATOR_INSTRUCTIONS="You are a curator.",
        AUTH_MODE="token",
        API_TOKENS=f"alice:{TOKEN}",
        DATABASE_URL=database_url,
        RATELIMIT_RUNS="off",
        RATELIMIT_DEFAULT="off",
        POLL_FIRST_MS="50",
        POLL_MAX_MS="200",
        UPSTREAM_TIMEOUT_SECONDS="2",
        FORWARDED_PROXIES="1",
        LOG_FORMAT="text",
        LOG_LEVEL="info",
        PYTHONUNBUFFERED="1",
    )
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def start_gunicorn(directory: Path, env: dict, *args: str) -> tuple[Child, int]:
    """gunicorn with gunicorn.conf.py on a free port; returns once a worker answers /healthz."""
    port = free_port()
    env = {**env, "PORT": str(port)}
    child = Child([sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *args], directory / "gunicorn.log", env)

    def healthy():
        try:
            return call("GET", f"http://127.0.0.1:{port}/healthz", timeout=2)[0] == 200
        except OSError:
            return False

    _until_ready(child, healthy, "gunicorn to answer /healthz")
    return child, port


def start_nginx(directory: Path, backend_port: int, run_timeout: float) -> tuple[Child, int]:
    """nginx in the foreground with deploy/nginx.conf rendered for this backend; returns it and its port."""
    port = free_port()
    for sub in ("logs", "temp"):
        (directory / sub).mkdir(exist_ok=True)
    (directory / "site.conf").write_text(
        render(
            run_timeout=run_timeout,
            upstream=f"127.0.0.1:{backend_port}",
            listen=f"127.0.0.1:{port}",
            log_dir=str(directory / "logs"),
        )
    )
    temp = directory / "temp"
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must write to this private directory
    (directory / "nginx.conf").write_text(
        f"daemon off;\nworker_processes 1;\npid {directory}/nginx.pid;\n{user}"
        f"error_log {directory}/logs/error.log info;\n"
        "events { worker_connections 512; }\n"
        "http {\n"
        f"    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n    scgi_temp_path {temp}/scgi;\n"
        f"    include {directory}/site.conf;\n"
        "}\n"
    )
    args = [NGINX, "-p", str(directory), "-c", str(directory / "nginx.conf"), "-e", str(directory / "logs/error.log")]
    child = Child(args, directory / "nginx.out")
    _until_ready(child, lambda: accepts(port), "nginx", directory / "logs/error.log")
    return child, port


def children_of(pid: int) -> set[int]:
    """The pids of a process's children (gunicorn's workers), from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found

"""Real server processes for the tests and the benchmark: free ports, starting, readiness, stopping.

Every server is a child process in a session (process group) of its own, with its
output in a log file; `stop()` signals it, waits, and then kills whatever is left
of its process group, so no worker outlives a test or a benchmark phase.
Starters wait until the server answers and fail with its log when it does not.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
START_TIMEOUT_SECONDS = 30


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.02):
    """Poll `predicate` until it returns something true, and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def accepts(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2) -> int | None:
    """The HTTP status of a GET of `url` (4xx and 5xx included); None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except OSError:
        return None


class Child:
    """A server process in a process group of its own, with its output in a log file."""

    def __init__(self, args, log_path: Path, env=None, cwd=ROOT):
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # closed in stop()
        self.process = subprocess.Popen(
            [str(a) for a in args], stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )
        self.pid = self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def send(self, sig) -> None:
        """Signal the process itself (gunicorn's master, nginx's master), not its group."""
        self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> int | None:
        """Send `sig`, wait up to `timeout` for the process to end (then SIGKILL), kill what is left
        of its process group, and close its log; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._kill_group()
                self.process.wait(5)
        self._kill_group()  # workers the leader left behind
        self._log.close()
        return self.process.returncode

    def _kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


def until_ready(child: Child, ready, what: str, more_log: Path | None = None, timeout=START_TIMEOUT_SECONDS) -> None:
    """Wait until `ready()`; if the child exits or never gets ready, stop it and fail with its log."""
    try:
        wait_until(lambda: not child.alive() or ready(), timeout, what, interval=0.05)
        assert child.alive(), f"{what} exited"
    except BaseException:
        child.stop(signal.SIGKILL, timeout=5)
        extra = more_log.read_text() if more_log and more_log.exists() else ""
        raise AssertionError(f"{what} did not start:\n{child.log()}{extra}") from None


def _children() -> dict[int, list[int]]:
    """Every live process's children, by parent pid, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    return children


def children_of(pid: int) -> set[int]:
    """The pids of a process's children (gunicorn's workers)."""
    return set(_children().get(pid, ()))


def tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children = _children()
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


# --- gunicorn and the fake upstream -------------------------------------------------------------


def gunicorn_args(
    conf: Path, worker: str, port: int, connections: int, threads: int | None, workers: int = 1
) -> list[str]:
    """gunicorn with `workers` workers of class `worker` on 127.0.0.1:`port`; `conf` is passed with -c."""
    args = [sys.executable, "-m", "gunicorn", "--no-control-socket", "-c", str(conf), "-k", worker, "-w", str(workers)]
    args += ["--worker-connections", str(connections), "--backlog", "4096", "-b", f"127.0.0.1:{port}"]
    if worker == "gthread" and threads:
        args += ["--threads", str(threads)]
    return args


def start_fake_upstream(
    log_dir: Path, *options: str, port: int | None = None, server: str = "werkzeug", cwd: Path = ROOT
) -> tuple[Child, str]:
    """The fake upstream as its own process on a free port; returns it and its URL (without /v1).

    `server` is "werkzeug" (`python -m fake_openai [options]`, no keep-alive) or a gunicorn
    worker class ("gthread", "gevent"): one worker only, since the simulator's state lives in it.
    """
    port = port or free_port()
    if server == "werkzeug":
        args = [sys.executable, "-m", "fake_openai", "--host", "127.0.0.1", "--port", str(port), *options]
    else:
        conf = ROOT / "bench" / "gunicorn_conf.py"
        args = [*gunicorn_args(conf, server, port, 8000, 256), "fake_openai:create_fake_app()"]
    child = Child(args, Path(log_dir) / "upstream.log", env=dict(os.environ), cwd=cwd)
    until_ready(child, lambda: http_status(f"http://127.0.0.1:{port}/_fake/stats") is not None, "the fake upstream")
    return child, f"http://127.0.0.1:{port}"


def start_gunicorn(
    log_dir: Path,
    env: dict,
    *args: str,
    command: list[str] | None = None,
    port: int | None = None,
    cwd: Path = ROOT,
    name: str = "gunicorn",
) -> tuple[Child, int]:
    """gunicorn serving the backend on a free port (PORT in its environment, for gunicorn.conf.py);
    returns once a worker answers /healthz. It runs with the shipped gunicorn.conf.py and `args`,
    or as `command` when given (which must bind to `port`)."""
    port = port or free_port()
    env = {**env, "PORT": str(port)}
    command = command or [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", *args]
    child = Child(command, Path(log_dir) / f"{name}.log", env, cwd=cwd)
    until_ready(child, lambda: http_status(f"http://127.0.0.1:{port}/healthz") == 200, "gunicorn to answer /healthz")
    return child, port


# --- nginx --------------------------------------------------------------------------------------


def start_nginx(
    directory: Path, backend_port: int | list[int], run_timeout: float, **render_options
) -> tuple[Child, int]:
    """nginx in the foreground with deploy/nginx.conf rendered for this backend, or these backends in its
    `upstream` block (and `render_options`, e.g. header_timeout); returns it and its port."""
    from deploy.nginx_site import render

    port = free_port()
    for sub in ("logs", "temp"):
        (directory / sub).mkdir(exist_ok=True)
    (directory / "site.conf").write_text(
        render(
            run_timeout=run_timeout,
            upstream=[f"127.0.0.1:{p}" for p in ([backend_port] if isinstance(backend_port, int) else backend_port)],
            listen=f"127.0.0.1:{port}",
            log_dir=str(directory / "logs"),
            **render_options,
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
    until_ready(child, lambda: accepts(port), "nginx", directory / "logs/error.log")
    return child, port


# --- Redis --------------------------------------------------------------------------------------


def start_redis(directory: Path, port: int | None = None) -> tuple[Child, str]:
    """A throwaway Redis server (Debian's redis-server) on a free port (or `port`, to start one again),
    nothing saved; returns it and its URL."""
    import redis

    port = port or free_port()
    command = [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(directory)]
    child = Child(command, directory / "redis.log")
    client = redis.Redis(port=port)

    def pong() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        until_ready(child, pong, "redis-server")
    finally:
        client.close()
    return child, f"redis://127.0.0.1:{port}/0"


# --- PostgreSQL ---------------------------------------------------------------------------------

PG_TEMPLATE = "migrated_template"


def _postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's bin directory (Debian keeps them under /usr/lib/postgresql)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL is not installed: run `bash scripts/setup.sh --servers`")
    return Path(initdb).parent


class PostgresServer:
    """A throwaway PostgreSQL cluster: initdb into a temporary directory, `postgres` on a free loopback
    port, a fresh database per test (copied from a migrated template), all removed by `stop()`.

    PostgreSQL refuses to run as root; as root, the server runs as the `postgres` system user
    (created by the Debian package) through `runuser`.
    """

    def __init__(self):
        self.bin = _postgres_bin_dir()
        self.root = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._started = False
        self._names = itertools.count(1)
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of a database on this server."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """initdb, then `pg_ctl start` until the server accepts connections; then the migrated template."""
        from app.store.db import upgrade

        initdb = [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust"]
        initdb += ["-E", "UTF8", "--no-sync", "--no-instructions"]
        subprocess.run([*self._as_user, *initdb], check=True, capture_output=True)
        self._started = True
        self.start_server()
        self._execute(f"CREATE DATABASE {PG_TEMPLATE}")
        upgrade(self.url(PG_TEMPLATE))

    def start_server(self) -> None:
        """`pg_ctl start` on the initialised cluster, until it accepts connections."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
        )
        log = str(self.root / "server.log")
        self._pg_ctl("start", "-w", "-t", str(START_TIMEOUT_SECONDS), "-l", log, "-o", options)

    def stop_server(self) -> None:
        """Fast shutdown, keeping the cluster for `start_server` (a restart, as an outage)."""
        self._pg_ctl("stop", "-m", "fast", "-w")

    def _pg_ctl(self, *args: str, check: bool = True) -> None:
        command = [*self._as_user, str(self.bin / "pg_ctl"), "-D", str(self.data), *args]
        done = subprocess.run(command, capture_output=True, text=True)
        if check and done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"pg_ctl {args[0]} failed: {done.stderr} {log.read_text() if log.exists() else ''}")

    def _execute(self, statement: str) -> None:
        import psycopg

        dsn = f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(statement)

    def new_database(self, migrated: bool = True) -> str:
        """The URL of a new database: with every migration applied, or empty."""
        name = f"test_{next(self._names)}"
        self._execute(f"CREATE DATABASE {name} TEMPLATE {PG_TEMPLATE if migrated else 'template0'}")
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown (open connections are closed) of the server this object started; remove its files."""
        try:
            if self._started:
                self._pg_ctl("stop", "-m", "fast", "-w", check=False)
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

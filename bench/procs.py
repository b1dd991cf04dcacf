"""Starting and stopping the servers under test, and reading their process tree from /proc."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.config import Plan

ROOT = Path(__file__).resolve().parent.parent
BENCH_CONF = ROOT / "bench" / "gunicorn_conf.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen | None = None) -> None:
    """Block until `url` answers 200, or raise (also when `proc` has exited)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args[:4]}... exited with {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:g}s")


class Server:
    """One server process (and its children) started by the benchmark, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path, cwd: Path = ROOT):
        self.name = name
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "ab")  # closed in stop()
        # Its own session, so that stop() can signal exactly this process group.
        self.proc = subprocess.Popen(
            args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = 15.0) -> None:
        """TERM the process group this server leads, then KILL it if it lingers."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()


def gunicorn_args(
    conf: Path, worker: str, port: int, connections: int, threads: int | None, workers: int = 1
) -> list[str]:
    """gunicorn with `workers` workers of class `worker` on 127.0.0.1:`port`; `conf` is passed with -c."""
    args = [sys.executable, "-m", "gunicorn", "--no-control-socket", "-c", str(conf), "-k", worker, "-w", str(workers)]
    args += ["--worker-connections", str(connections), "--backlog", "4096", "-b", f"127.0.0.1:{port}"]
    if worker == "gthread" and threads:
        args += ["--threads", str(threads)]
    return args


def start_fake(port: int, kind: str, log_dir: Path, code: Path = ROOT) -> Server:
    """The fake upstream on 127.0.0.1:`port`: its own werkzeug server, or one gunicorn worker."""
    if kind == "werkzeug":  # closes every connection after one answer
        args = [sys.executable, "-m", "fake_openai", "--host", "127.0.0.1", "--port", str(port)]
    else:  # one worker only: the simulator's state lives in that process
        args = [*gunicorn_args(BENCH_CONF, kind, port, 8000, 256), "fake_openai:create_fake_app()"]
    server = Server("fake-upstream", args, dict(os.environ), log_dir, cwd=code)
    wait_http(f"http://127.0.0.1:{port}/_fake/stats", proc=server.proc)
    return server


def backend_env(
    fake_port: int, database_url: str, strategy_env: dict[str, str], extra: dict[str, str]
) -> dict[str, str]:
    """The backend's environment: the deployment of the brief, pointed at the fake upstream."""
    # Only what a process needs from ours: the rest of the deployment's environment is set here.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    env.update(
        OPENAI_BASE_URL=f"http://127.0.0.1:{fake_port}/v1",
        OPENAI_API_KEY="sk-bench",
        AUTH_MODE="none",
        ASSISTANT_BENCH_MODEL="gpt-4o",
        ASSISTANT_BENCH_ID="asst_bench",
        DATABASE_URL=database_url,
        RUN_TIMEOUT_SECONDS="60",
        LOG_LEVEL="warning",
        # Every benchmark run comes from one anonymous user: per-user limits would measure themselves.
        RATELIMIT_RUNS="off",
        RATELIMIT_DEFAULT="off",
    )
    env.update(strategy_env)
    env.update(extra)
    return env


def migrate(env: dict[str, str], code: Path = ROOT) -> None:
    """Create the backend's database schema (`python -m app.migrate`)."""
    subprocess.run([sys.executable, "-m", "app.migrate"], env=env, cwd=code, check=True, capture_output=True)


def backend_conf(code: Path = ROOT) -> Path:
    """The deployment's own gunicorn.conf.py when the repository has one (its hooks are part of
    what is measured); the command line overrides its worker class, counts and bind."""
    own = code / "gunicorn.conf.py"
    return own if own.exists() else BENCH_CONF


def start_backend(port: int, env: dict[str, str], worker: str, plan: Plan, log_dir: Path, code: Path = ROOT) -> Server:
    """The backend as deployed: gunicorn, `plan.backend_workers` of class `worker`, serving wsgi:app from `code`."""
    conf = backend_conf(code)
    args = [*gunicorn_args(conf, worker, port, plan.worker_connections, plan.threads, plan.backend_workers), "wsgi:app"]
    server = Server("backend", args, env, log_dir, cwd=code)
    wait_http(f"http://127.0.0.1:{port}/healthz", proc=server.proc)
    return server


def tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            stat = Path(entry.path, "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, everything but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / CLOCK_TICKS


def memory(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in bytes summed over these processes, from /proc/PID/smaps_rollup."""
    rss = pss = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
    return rss, pss


def thread_count(pids: list[int]) -> int:
    """Operating-system threads in these processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/task"))
    return total

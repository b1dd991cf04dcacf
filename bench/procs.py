"""The benchmark's deployment on the shared process harness (harness/servers.py), and what /proc says of it."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from harness.servers import (  # noqa: F401 - free_port and tree are part of what bench uses from here
    ROOT,
    Child,
    free_port,
    gunicorn_args,
    start_fake_upstream,
    start_gunicorn,
    tree,
)

if TYPE_CHECKING:
    from bench.config import Plan

BENCH_CONF = ROOT / "bench" / "gunicorn_conf.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def start_fake(port: int, kind: str, log_dir: Path, code: Path = ROOT) -> Child:
    """The fake upstream on 127.0.0.1:`port`: its own werkzeug server, or one gunicorn worker of class `kind`."""
    return start_fake_upstream(log_dir, port=port, server=kind, cwd=code)[0]


def bench_tokens(users: int) -> dict[str, str]:
    """The benchmark's users and their tokens (API_TOKENS), user -> token."""
    return {f"user{i}": f"bench-token-{i:04d}" for i in range(users)}


def backend_env(
    fake_port: int, database_url: str, strategy_env: dict[str, str], extra: dict[str, str]
) -> dict[str, str]:
    """The backend's environment as deployed (token auth, per-user limits on, the default log level and
    format), pointed at the fake upstream."""
    from bench import config

    # Only what a process needs from ours: the rest of the deployment's environment is set here.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    env.update(
        OPENAI_BASE_URL=f"http://127.0.0.1:{fake_port}/v1",
        OPENAI_API_KEY="sk-bench",
        AUTH_MODE="token",
        API_TOKENS=",".join(f"{user}:{token}" for user, token in bench_tokens(config.USERS).items()),
        ASSISTANT_BENCH_MODEL="gpt-4o",
        ASSISTANT_BENCH_ID="asst_bench",
        DATABASE_URL=database_url,
        RUN_TIMEOUT_SECONDS="60",
        # On, as deployed, and high enough never to trigger.
        RATELIMIT_RUNS=config.RATELIMIT_RUNS,
        RATELIMIT_DEFAULT=config.RATELIMIT_DEFAULT,
    )
    env.update(strategy_env)
    env.update(extra)
    return env


def migrate(env: dict[str, str], code: Path = ROOT) -> None:
    """Create the backend's database schema (`python -m app.store.migrate`)."""
    subprocess.run([sys.executable, "-m", "app.store.migrate"], env=env, cwd=code, check=True, capture_output=True)


def backend_conf(code: Path = ROOT) -> Path:
    """The deployment's own gunicorn.conf.py when the repository has one (its hooks are part of
    what is measured); the command line overrides its worker class, counts and bind."""
    own = code / "gunicorn.conf.py"
    return own if own.exists() else BENCH_CONF


def start_backend(port: int, env: dict[str, str], worker: str, plan: Plan, log_dir: Path, code: Path = ROOT) -> Child:
    """The backend: "shipped" is `gunicorn -c gunicorn.conf.py` exactly as deployed (PORT in the
    environment, nothing else); otherwise `plan.backend_workers` of class `worker`, sized by the plan."""
    if worker == "shipped":
        return start_gunicorn(log_dir, env, port=port, cwd=code, name="backend")[0]
    conf = backend_conf(code)
    args = [*gunicorn_args(conf, worker, port, plan.worker_connections, plan.threads, plan.backend_workers), "wsgi:app"]
    return start_gunicorn(log_dir, env, command=args, port=port, cwd=code, name="backend")[0]


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

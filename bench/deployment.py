"""One deployment under test: the fake upstream and the backend (gunicorn), for one strategy and worker."""

from __future__ import annotations

import http.client
import shutil
import tempfile
import time
from pathlib import Path

from bench import procs
from bench.config import STRATEGIES, USERS, Plan
from bench.fake import FakeControl
from bench.overhead import post_json


class Deployment:
    """Starts the fake upstream once and the backend as often as asked, each on a free port.

    Every (re)start of the backend gets a fresh SQLite database, so that no phase
    inherits another's rows or memory.
    """

    def __init__(self, strategy: str, worker: str, plan: Plan, log_dir: Path, fake_server: str, code: Path):
        self.strategy = strategy
        self.tokens = list(procs.bench_tokens(USERS).values())
        self.worker = worker
        self.plan = plan
        self.log_dir = log_dir
        self.fake_server = fake_server
        self.code = code
        self.fake_port = procs.free_port()
        self.backend_port = 0
        self.fake: procs.Child | None = None
        self.backend: procs.Child | None = None
        self.control: FakeControl | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix=f"bench-{strategy}-{worker}-"))
        self._starts = 0

    def __enter__(self) -> Deployment:
        self.fake = procs.start_fake(self.fake_port, self.fake_server, self.log_dir, self.code)
        self.control = FakeControl(self.fake_port)
        self.start_backend()
        return self

    def __exit__(self, *exc) -> None:
        if self.backend is not None:
            self.backend.stop()
        if self.control is not None:
            self.control.close()
        if self.fake is not None:
            self.fake.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)

    def start_backend(self) -> None:
        """(Re)start the backend on a fresh database, then warm it up with one short run."""
        if self.backend is not None:
            self.backend.stop()
        self._starts += 1
        database = self._tmp / f"bench-{self._starts}.db"
        env = procs.backend_env(self.fake_port, f"sqlite:///{database}", STRATEGIES[self.strategy], self.plan.extra_env)
        procs.migrate(env, self.code)
        self.backend_port = procs.free_port()
        self.backend = procs.start_backend(self.backend_port, env, self.worker, self.plan, self.log_dir, self.code)
        self.warm_up()

    def warm_up(self) -> None:
        warm_up(self.backend_port, self.tokens[0], {})

    @property
    def roots(self) -> dict[str, int]:
        """The process ids whose trees the samplers watch."""
        return {"backend": self.backend.pid, "fake": self.fake.pid}


def warm_up(port: int, token: str | None, run_body: dict) -> None:
    """One whole short run on the backend at `port`, so that lazy imports and pools exist before
    anything is measured."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        thread = post_json(conn, "/api/openai/threads", {}, token)
        path = f"/api/openai/threads/{thread['id']}"
        post_json(conn, f"{path}/messages", {"role": "user", "content": "warm up [fake duration=0.2]"}, token)
        post_json(conn, f"{path}/runs", run_body, token)
    finally:
        conn.close()
    time.sleep(0.5)

"""`python -m bench.seed`: the seed's Express backend measured as the backend is, in the same session.

The seed (../shared/seed-express, Node + Express + `openai` 4.28, no auth) speaks the
Assistants v2 API, so it runs against the same fake upstream's Assistants routes. Its
width steps, CPU per run and pass-through overhead go through the benchmark's own
phases (bench/phases.py): the same load generator, sampler, step rules and fit.

    python -m bench.seed --seed-dir /tmp/seed-express --width-steps 1000,4000 --out bench/out/seed

`--seed-dir` is a copy of ../shared/seed-express where `npm ci` has been run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench import config, overhead, phases, procs
from bench.deployment import warm_up
from bench.fake import FakeControl
from harness.servers import Child, accepts, wait_until

ASSISTANT_TYPE = "curator"


class SeedDeployment:
    """The fake upstream and the seed's Node process, with what bench/phases.py asks of a deployment."""

    strategy, worker = "seed", "express"
    tokens: list = []  # no auth
    run_body = {"assistant_type": ASSISTANT_TYPE}

    def __init__(self, plan: config.Plan, log_dir: Path, seed_dir: Path, fake_server: str = "gevent"):
        self.plan, self.log_dir, self.seed_dir, self.fake_server = plan, log_dir, seed_dir, fake_server
        self.fake_port = procs.free_port()
        self.backend_port = 0
        self.fake = self.backend = self.control = None

    def __enter__(self) -> SeedDeployment:
        self.fake = procs.start_fake(self.fake_port, self.fake_server, self.log_dir)
        self.control = FakeControl(self.fake_port)
        self.start_backend()
        return self

    def __exit__(self, *exc) -> None:
        for child in (self.backend, self.fake):
            if child is not None:
                child.stop()
        if self.control is not None:
            self.control.close()

    def start_backend(self) -> None:
        """(Re)start the seed, then one short run through it."""
        if self.backend is not None:
            self.backend.stop()
        self.backend_port = procs.free_port()
        env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "TMPDIR")}
        env.update(
            OPENAI_API_KEY="sk-bench",
            OPENAI_BASE_URL=f"http://127.0.0.1:{self.fake_port}/v1",
            ASSISTANT_CURATOR_ID="asst_bench",
            HOST="127.0.0.1",
            PORT=str(self.backend_port),
        )
        self.backend = Child(["node", "src/server.js"], self.log_dir / "seed.log", env=env, cwd=self.seed_dir)
        wait_until(lambda: accepts(self.backend_port), 30, "the seed to listen")
        self.warm_up()

    def warm_up(self) -> None:
        warm_up(self.backend_port, None, self.run_body)

    @property
    def roots(self) -> dict[str, int]:
        return {"backend": self.backend.pid, "fake": self.fake.pid}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.seed", description=__doc__)
    parser.add_argument("--seed-dir", type=Path, required=True, help="seed-express with its node_modules")
    parser.add_argument("--width-steps", default="1000,4000")
    parser.add_argument("--phases", default="lag,width,overhead", help="any of lag, width, overhead")
    parser.add_argument("--out", type=Path, default=procs.ROOT / "bench" / "out" / "seed")
    args = parser.parse_args(argv)
    steps = tuple(int(n) for n in args.width_steps.split(","))
    plan = replace(config.FULL, width_steps=steps)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-seed-"))
    results: dict = {"started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "steps": []}
    try:
        with SeedDeployment(plan, args.out, args.seed_dir) as dep:
            if "overhead" in args.phases:
                results["overhead"] = overhead.measure(
                    dep.backend_port, dep.fake_port, plan.overhead_calls, direct_path_of=overhead.ASSISTANTS_MESSAGES
                )
                print(f"seed overhead p50 {results['overhead']['p50_difference_ms']:+.2f} ms", flush=True)
            if "lag" in args.phases:
                results["lag"] = phases.lag_and_calls(dep, work)
                lag = results["lag"]
                print(
                    f"seed lag p50/p99 {lag['lag_ms'].get('p50')}/{lag['lag_ms'].get('p99')} ms, "
                    f"{lag['calls']['run_calls_per_run']} upstream calls per run",
                    flush=True,
                )
            for n in steps if "width" in args.phases else ():
                step = phases.width_step(dep, n, work)
                results["steps"].append(step)
                cpu = step["processes"]["backend"]["cpu_seconds"]
                print(
                    f"seed width {n}: {step['succeeded']}/{n} ok, {step['peak_waiting_upstream']} at once, "
                    f"lag p50/p99 {step['lag_ms'].get('p50')}/{step['lag_ms'].get('p99')} ms, "
                    f"PSS {step['processes']['backend']['pss_peak_mb']} MB, CPU {cpu} s = "
                    f"{1000 * cpu / n:.2f} ms per run; fit {step['cpu']}; gave {step['gave']}",
                    flush=True,
                )
                if step["gave"]:
                    break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (args.out / "seed-results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

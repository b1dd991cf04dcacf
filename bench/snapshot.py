"""A copy of the code under test, taken once per benchmark run.

Other work goes on in the same tree while a run lasts; the servers run from this
copy so that every phase measures the same code, and the results name it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench.procs import ROOT

# What the backend and the fake upstream need at run time.
PARTS = ("app", "migrations", "fake_openai", "wsgi.py", "gunicorn.conf.py")


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    return done.stdout.rstrip() if done.returncode == 0 else ""


def take(dest: Path) -> dict:
    """Copy the parts into `dest`; return the commit and the parts that differ from it."""
    for part in PARTS:
        source = ROOT / part
        if source.is_dir():
            shutil.copytree(source, dest / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif source.exists():
            (dest / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / part)
    changed = [line for line in _git("status", "--porcelain", "--", *PARTS).splitlines() if line.strip()]
    return {"commit": _git("rev-parse", "--short", "HEAD"), "uncommitted": [line[3:] for line in changed]}


def wait_strategies(code: Path) -> set[str] | None:
    """The WAIT_STRATEGY values the code under test accepts; None when it does not say."""
    probe = "from app.environment import WAIT_STRATEGY; print(','.join(WAIT_STRATEGY.choices))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=code, capture_output=True, text=True)
    return set(done.stdout.strip().split(",")) if done.returncode == 0 and done.stdout.strip() else None

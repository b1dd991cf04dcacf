"""Gunicorn settings for this backend: `gunicorn -c gunicorn.conf.py` serves `wsgi:app` (docs/deploying.md).

Every value comes from the environment (and `.env`), read with the parsers and
defaults of app/environment.py (sized for a small machine, 2 cores). The start
is refused, with one line naming the setting, when the worker class or a
timeout would cut the backend's own waits, or when the offline upstream would
be split between workers.
"""

import importlib.util
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dotenv import dotenv_values

# Room after the wait and the cancel: the bookkeeping and the answer itself.
SHUTDOWN_MARGIN_SECONDS = 10.0
# Worker classes in which a waiting run holds a thread (or a greenlet), not the whole process.
WAITING_WORKER_CLASSES = {"gthread", "threadworker", "gevent", "geventworker"}

# What wsgi.py's load_dotenv will see too: the environment wins over .env.
_env = {**dotenv_values(Path(__file__).resolve().with_name(".env")), **os.environ}


def _load_environment_module():
    # By path, under a private name: a master that had imported the `app` package
    # would fork workers that run the old code after a reload (SIGHUP).
    spec = importlib.util.spec_from_file_location(
        "_gunicorn_app_environment", Path(__file__).resolve().parent / "app" / "environment.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while making its classes
    spec.loader.exec_module(module)
    return module


_var = _load_environment_module()
CANCEL_GRACE_SECONDS = _var.CANCEL_GRACE_SECONDS


def _refuse(message):
    # One line and exit status 3, as wsgi.py does for the app's configuration errors.
    print(f"gunicorn.conf.py: refusing to start: {message}", file=sys.stderr, flush=True)
    raise SystemExit(3)


def _setting(variable, *default):
    try:
        return variable.read(_env, *default)
    except _var.ConfigError as error:
        _refuse(str(error))


RUN_TIMEOUT_SECONDS = _setting(_var.RUN_TIMEOUT_SECONDS)
# The longest a POST .../runs can take: the wait, then the cancel of a run that timed out.
LONGEST_REQUEST_SECONDS = RUN_TIMEOUT_SECONDS + CANCEL_GRACE_SECONDS + SHUTDOWN_MARGIN_SECONDS

_host = _setting(_var.HOST)
if ":" in _host and not _host.startswith("["):
    _host = f"[{_host}]"
# The offline upstream is in-process: every worker would have its own.
OFFLINE = _setting(_var.OPENAI_BASE_URL) == _var.OFFLINE
bind = _env.get("BIND") or f"{_host}:{_setting(_var.PORT)}"
wsgi_app = "wsgi:app"
proc_name = "backend"

worker_class = "gthread"
workers = _setting(_var.WEB_CONCURRENCY)
# Every waiting run holds a thread that mostly sleeps, so threads are cheap here.
threads = _setting(_var.WEB_THREADS)
# In gthread workers this is a heartbeat, not a per-request limit.
timeout = 30
# A restart (SIGHUP) or stop (SIGTERM) lets every waiting run finish first.
graceful_timeout = _setting(_var.GRACEFUL_TIMEOUT, math.ceil(LONGEST_REQUEST_SECONDS))
# Longer than nginx's upstream keepalive_timeout (60 s by default) if that is ever turned on,
# so gunicorn never closes a connection that nginx is about to reuse.
keepalive = _setting(_var.KEEPALIVE)
if Path("/dev/shm").is_dir():
    worker_tmp_dir = "/dev/shm"  # the heartbeat file; a disk-backed /tmp can stall it

# The app logs one access line per request, with its request id; gunicorn logs its own events.
accesslog = None
errorlog = "-"
loglevel = _setting(_var.LOG_LEVEL)

# The app trusts X-Forwarded-* from FORWARDED_PROXIES hops (werkzeug's ProxyFix), and only
# there: gunicorn itself rewrites nothing from forwarded headers.
forwarded_allow_ips = ""
secure_scheme_headers = {}
forwarder_headers = ""

# No ~/.gunicorn/gunicorn.ctl shared by every gunicorn of this user; signals do the same.
control_socket_disable = True


def _worker_name(cfg):
    # As asked for: gunicorn would quietly turn an explicit 'sync' with threads into gthread.
    uri = cfg.settings["worker_class"].get()
    return (uri if isinstance(uri, str) else uri.__name__).rsplit(".", 1)[-1].lower()


def _refusal(cfg):
    """Why this configuration would cut waiting runs, or None."""
    name = _worker_name(cfg)
    if name in ("sync", "syncworker"):
        return "worker_class: 'sync' kills any request longer than its timeout and serves one at a time; use gthread"
    if name not in WAITING_WORKER_CLASSES:
        return f"worker_class: {name!r} is not a worker this backend waits in; use gthread (or gevent)"
    if name in ("gthread", "threadworker") and cfg.threads < 2:
        return f"threads: {cfg.threads} would let one waiting run hold the whole worker; use at least 2"
    if OFFLINE and cfg.workers > 1:
        return (
            f"workers: {cfg.workers} with OPENAI_BASE_URL=offline, whose upstream lives in each worker's memory "
            "(a thread made in one would be a 404 in another); set WEB_CONCURRENCY=1"
        )
    if cfg.graceful_timeout < LONGEST_REQUEST_SECONDS:
        return (
            f"graceful_timeout: {cfg.graceful_timeout} s would cut waiting runs on a restart; it must be at least "
            f"RUN_TIMEOUT_SECONDS ({RUN_TIMEOUT_SECONDS:g}) + cancel grace ({CANCEL_GRACE_SECONDS:g}) "
            f"+ margin ({SHUTDOWN_MARGIN_SECONDS:g}) = {LONGEST_REQUEST_SECONDS:g} s"
        )
    return None


def _export_threads(cfg):
    # The app derives MAX_INFLIGHT_RUNS from this (app/settings.py inflight_limit).
    if _worker_name(cfg) in ("gthread", "threadworker"):
        os.environ["WORKER_THREADS"] = str(cfg.threads)
    else:
        os.environ.pop("WORKER_THREADS", None)


def _own_metrics_dir():
    return os.path.join(tempfile.gettempdir(), f"backend-metrics-{os.getpid()}")


def _prepare_metrics_dir():
    # Set before any worker imports prometheus_client: the choice of multiprocess mode is made at import.
    path = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _own_metrics_dir())
    os.makedirs(path, exist_ok=True)
    if "GUNICORN_PID" not in os.environ:  # not a USR2 upgrade, whose old workers still write here
        for stale in Path(path).glob("*.db"):
            stale.unlink()


def on_starting(server):
    """Refuse an unsafe configuration; prepare what the workers inherit."""
    refusal = _refusal(server.cfg)
    if refusal:
        _refuse(refusal)
    _export_threads(server.cfg)
    _prepare_metrics_dir()


def on_reload(server):
    """Workers forked after a reload see the reloaded thread count; an unsafe reload is reported."""
    refusal = _refusal(server.cfg)
    if refusal:
        server.log.error("gunicorn.conf.py: unsafe configuration after reload: %s", refusal)
    _export_threads(server.cfg)


def child_exit(server, worker):
    """Drop the live gauges of a worker that has exited; its counters stay in the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """Remove the metrics directory this master made for itself."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path == _own_metrics_dir():
        shutil.rmtree(path, ignore_errors=True)

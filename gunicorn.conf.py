"""Gunicorn settings for this backend: `gunicorn -c gunicorn.conf.py` serves `wsgi:app` (docs/deploying.md).

Every value comes from the environment (and `.env`), read with the parsers and
defaults of app/environment.py (sized for a small machine, 2 cores). The start
is refused, with one line naming the setting, when the worker class or a
timeout would cut the backend's own waits, or when the offline upstream would
be split between workers. In each worker (post_fork), gunicorn's settings are read
once, its own refusals of a malformed request are answered as JSON, and under
gevent a connection's first
request head must arrive within HEADER_TIMEOUT_SECONDS; every gunicorn log line
has its control characters escaped.
"""

import http
import importlib.util
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from dotenv import dotenv_values
from gunicorn import glogging

# Room after the wait and the cancel: the bookkeeping and the answer itself.
SHUTDOWN_MARGIN_SECONDS = 10.0
# Worker classes in which a waiting run holds a thread (or a greenlet), not the whole process.
WAITING_WORKER_CLASSES = {"gthread", "threadworker", "gevent", "geventworker"}

# What wsgi.py's load_dotenv will see too: the environment wins over .env.
_env = {**dotenv_values(Path(__file__).resolve().with_name(".env")), **os.environ}


def _load_app_module(name):
    # By path, under a private name: a master that had imported the `app` package
    # would fork workers that run the old code after a reload (SIGHUP).
    spec = importlib.util.spec_from_file_location(
        f"_gunicorn_app_{name}", Path(__file__).resolve().parent / "app" / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while making its classes
    spec.loader.exec_module(module)
    return module


_var = _load_app_module("environment")
_redaction = _load_app_module("redaction")
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

# gevent: a waiting run is a greenlet whose time.sleep and socket reads yield to the others, so
# one process holds thousands of them (docs/deploying.md, "Capacity"). gunicorn's gevent worker
# monkey-patches the standard library in each worker right after the fork, before it imports the
# app (never preload_app: the app would be imported unpatched in the master). gthread stays an
# alternative: WEB_WORKER_CLASS=gthread.
worker_class = _setting(_var.WEB_WORKER_CLASS)
# One per core: the work of a process is on one core at a time (the GIL, or the gevent hub).
workers = _setting(_var.WEB_CONCURRENCY)
# gevent: connections per worker, a hard cap (gunicorn's default is 1000). Every waiting run
# holds one; MAX_INFLIGHT_RUNS follows from it (app/settings.py inflight_limit).
worker_connections = _setting(_var.WEB_CONNECTIONS)
# gthread: every waiting run holds a thread that mostly sleeps.
threads = _setting(_var.WEB_THREADS)
# One listening socket shared by the workers (not SO_REUSEPORT). gevent workers accept one
# connection at a time when there are several, so the idler one takes the next: measured
# 48-52% of the connections and of the CPU each with 1,000 runs waiting, as even as with
# reuse_port, and a restart loses nothing queued (a worker's own socket would reset its queue).
reuse_port = False
backlog = 4096
# In gevent and gthread workers this is a heartbeat, not a per-request limit.
timeout = 30
# A restart (SIGHUP) or stop (SIGTERM) lets every waiting run finish first.
graceful_timeout = _setting(_var.GRACEFUL_TIMEOUT, math.ceil(LONGEST_REQUEST_SECONDS))
# Longer than nginx's upstream keepalive_timeout (60 s by default) if that is ever turned on,
# so gunicorn never closes a connection that nginx is about to reuse.
keepalive = _setting(_var.KEEPALIVE)
# gevent: how long the first request's head may take to arrive (post_fork below); later requests
# on a kept-alive connection have `keepalive`. gunicorn alone bounds the first one by `keepalive` too.
HEADER_TIMEOUT_SECONDS = _setting(_var.HEADER_TIMEOUT_SECONDS)
if Path("/dev/shm").is_dir():
    worker_tmp_dir = "/dev/shm"  # the heartbeat file; a disk-backed /tmp can stall it

# The app logs one access line per request, with its request id; gunicorn logs its own events,
# each on one line (OneLineLogger below).
accesslog = None
errorlog = "-"
loglevel = _setting(_var.LOG_LEVEL)


def _one_line_record(record):
    # A request's bytes (a header, a request line) quoted in gunicorn's message cannot start a line of its own.
    record.msg, record.args = _redaction.one_line(record.getMessage()), None
    return True


class OneLineLogger(glogging.Logger):
    """gunicorn's logger, with control characters escaped in every message."""

    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.addFilter(_one_line_record)


logger_class = OneLineLogger

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
        return "worker_class: 'sync' kills any request longer than its timeout and serves one at a time; use gevent"
    if name not in WAITING_WORKER_CLASSES:
        return f"worker_class: {name!r} is not a worker this backend waits in; use gevent (or gthread)"
    if name in ("gevent", "geventworker") and cfg.preload_app:
        return "preload_app: the app would be imported before gevent patches the standard library; turn it off"
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
    # The app derives MAX_INFLIGHT_RUNS from these (app/settings.py inflight_limit).
    name = _worker_name(cfg)
    os.environ.pop("WORKER_THREADS", None)
    os.environ.pop("WORKER_CONNECTIONS", None)
    if name in ("gthread", "threadworker"):
        os.environ["WORKER_THREADS"] = str(cfg.threads)
    elif name in ("gevent", "geventworker"):
        os.environ["WORKER_CONNECTIONS"] = str(cfg.worker_connections)


def _own_metrics_dir():
    return os.path.join(tempfile.gettempdir(), f"backend-metrics-{os.getpid()}")


def _prepare_metrics_dir():
    # Set before any worker imports prometheus_client: the choice of multiprocess mode is made at import.
    path = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", _own_metrics_dir())
    os.makedirs(path, exist_ok=True)
    if "GUNICORN_PID" not in os.environ:  # not a USR2 upgrade, whose old workers still write here
        for stale in Path(path).glob("*.db"):
            stale.unlink()


def _own_ratelimit_file():
    directory = "/dev/shm" if Path("/dev/shm").is_dir() else tempfile.gettempdir()
    return os.path.join(directory, f"backend-ratelimit-{os.getpid()}.db")


def _prepare_ratelimit_file():
    # With RATELIMIT_STORAGE_URI=memory://, the workers count in this one file, so that a limit
    # holds for the machine rather than for each worker (app/ratelimit.py FileWindows).
    path = os.environ.setdefault("RATELIMIT_SHARED_FILE", _own_ratelimit_file())
    if "GUNICORN_PID" not in os.environ:  # not a USR2 upgrade, whose old workers still count here
        _remove_ratelimit_file(path)


def _remove_ratelimit_file(path):
    for suffix in ("", "-wal", "-shm"):
        Path(path + suffix).unlink(missing_ok=True)


def _raise_open_files(server):
    # Every waiting run holds its client's connection, and with WAIT_STRATEGY=stream an
    # upstream one too: the soft limit (often 1024) would refuse connections long before
    # worker_connections. Raised as far as the hard limit allows; the workers inherit it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    width = server.cfg.worker_connections if _worker_name(server.cfg).startswith("gevent") else server.cfg.threads
    needed = 2 * width + 256
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target < needed:
            server.log.warning("open files limited to %d; %d runs per worker need about %d", hard, width, needed)


# The app's own configuration, checked once before any worker is forked, in a child process (the
# master never imports the app). Left to the workers, an error would make them all exit with 3
# at once, and gunicorn's halt on the second such exit ends the master with status 1 instead.
_CHECK_APP = """
from app.environment import ConfigError
from app.settings import load_settings
try:
    load_settings()
except ConfigError as error:
    print(f"configuration error: {error}")
    raise SystemExit(3)
"""


def _check_app_settings():
    here = Path(__file__).resolve().parent
    env = {k: v for k, v in _env.items() if v is not None}
    done = subprocess.run([sys.executable, "-c", _CHECK_APP], cwd=here, env=env, capture_output=True, text=True)
    if done.returncode == 3:
        print(done.stdout.strip(), file=sys.stderr, flush=True)
        raise SystemExit(3)


def _probe_upstream(server):
    # Once per start, here in the master (loaded by path: the master never imports the app);
    # the workers then skip their own look. Done before any worker is forked, and not in a
    # thread: a thread caught mid-import or mid-lock at a fork leaves the worker deadlocked.
    if OFFLINE:
        return
    spec = importlib.util.spec_from_file_location(
        "_gunicorn_upstream_probe", Path(__file__).resolve().parent / "app" / "upstream_probe.py"
    )
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    os.environ[probe.PROBED_VARIABLE] = "1"
    warning = probe.probe(_env.get("OPENAI_BASE_URL"), _env.get("OPENAI_API_KEY"))
    if warning:
        server.log.warning(warning)


def on_starting(server):
    """Refuse an unsafe configuration; prepare what the workers inherit; look at the upstream once."""
    refusal = _refusal(server.cfg)
    if refusal:
        _refuse(refusal)
    _check_app_settings()
    _probe_upstream(server)
    _export_threads(server.cfg)
    _prepare_metrics_dir()
    _prepare_ratelimit_file()
    _raise_open_files(server)


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
    """Remove the metrics directory and the rate-limit counters this master made for itself."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path == _own_metrics_dir():
        shutil.rmtree(path, ignore_errors=True)
    if os.environ.get("RATELIMIT_SHARED_FILE") == _own_ratelimit_file():
        _remove_ratelimit_file(_own_ratelimit_file())


# --- what the backend's own server answers before the app sees a request --------------------------

# gunicorn's parse errors, answered as JSON in the app's shape (OpenAI's under /v1) instead of HTML.
_GUNICORN_ERRORS = {
    "LimitRequestLine": (414, "The request line (method and URL) is too long."),
    "LimitRequestHeaders": (431, "The request's headers are too large or too many."),
    "UnsupportedTransferCoding": (501, "This Transfer-Encoding is not supported."),
    "ExpectationFailed": (417, "This Expect header is not supported."),
    "ForbiddenProxyRequest": (403, "Request forbidden."),
    "InvalidRequestLine": (400, "Bad request: invalid request line."),
    "InvalidRequestMethod": (400, "Bad request: invalid method."),
    "InvalidHTTPVersion": (400, "Bad request: invalid HTTP version."),
    "InvalidHeader": (400, "Bad request: invalid header."),
    "InvalidHeaderName": (400, "Bad request: invalid header name."),
    "ObsoleteFolding": (400, "Bad request: folded header lines are not accepted."),
}
# Not the client's fault: answered by gunicorn itself (a 500).
_NOT_CLIENT_ERRORS = ("InvalidResponseHeader", "InvalidResponseHeaderName", "ConfigurationProblem")


class HeadTimeout(Exception):
    """The first request's line and headers did not arrive within HEADER_TIMEOUT_SECONDS."""


def _error_answer(status, message, req):
    """An HTTP/1.1 answer that closes the connection, its body the app's JSON error shape."""
    path = getattr(req, "path", None) or ""
    if path == "/v1" or path.startswith("/v1/"):
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    else:
        body = {"error": message}
    data = (json.dumps(body) + "\n").encode()
    head = (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
    )
    return head.encode("latin-1") + data


def _json_errors(worker):
    """Answer gunicorn's own errors (bad request line or headers, a head that came too slowly) as JSON."""
    from gunicorn import util
    from gunicorn.http.errors import ParseException

    gunicorn_answer = worker.handle_error

    def handle_error(req, client, addr, exc):
        name = type(exc).__name__
        if isinstance(exc, HeadTimeout):
            status, message = 408, f"The request's headers did not arrive within {HEADER_TIMEOUT_SECONDS:g} s."
        elif isinstance(exc, ParseException) and name not in _NOT_CLIENT_ERRORS:
            status, message = _GUNICORN_ERRORS.get(name, (400, "Bad request: the request could not be parsed."))
            req = req or getattr(exc, "req", None)
        else:
            return gunicorn_answer(req, client, addr, exc)
        level = worker.log.info if status == 408 else worker.log.warning  # an idle client is not an attack
        level("refused a request from %s: %d %s (%s)", (addr or ("-",))[0], status, name, exc or message)
        try:
            util.write_nonblock(client, _error_answer(status, message, req))
        except Exception:
            worker.log.debug("could not send the %d answer", status)

    worker.handle_error = handle_error


def _bound_first_head(worker):
    """gevent: the first request's head must arrive within HEADER_TIMEOUT_SECONDS of the connection."""
    import gevent

    served = set()  # the greenlets (one per connection) that have had a request
    handle_connection, handle_request = worker.handle, worker.handle_request

    def handle(listener, client, addr):
        try:
            handle_connection(listener, client, addr)
        finally:
            served.discard(gevent.getcurrent())

    def handle_one(listener_name, req, sock, addr):
        served.add(gevent.getcurrent())
        return handle_request(listener_name, req, sock, addr)

    def timeout_ctx():
        # Used around the read of each request head on a kept-alive connection: gunicorn's own
        # is `keepalive` for every head, the first one included, and ends it silently.
        if gevent.getcurrent() in served:
            return gevent.Timeout(worker.cfg.keepalive, False)
        return gevent.Timeout(HEADER_TIMEOUT_SECONDS, HeadTimeout())

    worker.handle, worker.handle_request, worker.timeout_ctx = handle, handle_one, timeout_ctx


class _SettledConfig:
    """A worker's gunicorn settings, each value read once: gunicorn reads some thirty of them for
    every request, each through `Config.__getattr__` and its setting's `get`. Anything else
    (properties, the settings table) is the worker's own configuration's."""

    def __init__(self, cfg):
        self._cfg = cfg
        for name in cfg.settings:
            setattr(self, name, getattr(cfg, name))
        self.is_ssl = cfg.is_ssl

    def __getattr__(self, name):
        return getattr(self._cfg, name)


def post_fork(server, worker):
    """In each worker: settings read once; gunicorn's errors as JSON; under gevent, a bound on the
    first request's head."""
    worker.cfg = _SettledConfig(worker.cfg)
    _json_errors(worker)
    if _worker_name(worker.cfg) in ("gevent", "geventworker"):
        _bound_first_head(worker)

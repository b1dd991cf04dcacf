"""Render deploy/nginx.conf for this environment: `python -m deploy.nginx_site > /etc/nginx/sites-available/backend`.

It reads RUN_TIMEOUT_SECONDS, MAX_BODY_BYTES, FILE_MAX_BYTES, HEADER_TIMEOUT_SECONDS and
gunicorn's address (BIND, or HOST and PORT) from the environment and `.env` with
the parsers and defaults of app/environment.py, as the backend and
gunicorn.conf.py do, so that nginx's timeouts and body limits agree with theirs.
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Sequence
from pathlib import Path

from dotenv import dotenv_values

from app import environment as var

ROOT = Path(__file__).resolve().parent.parent
SITE = Path(__file__).resolve().with_name("nginx.conf")
# nginx waits this much longer than the backend's deadline, which covers the
# cancel after a timeout and gunicorn's graceful_timeout.
READ_TIMEOUT_MARGIN_SECONDS = 30
# An upload's body is its file plus the multipart framing around it (app/api/files.py).
MULTIPART_OVERHEAD_BYTES = 64 * 1024


def read_timeout(run_timeout: float) -> int:
    """nginx's proxy_read_timeout, in seconds, for a backend deadline of `run_timeout` seconds."""
    return math.ceil(run_timeout) + READ_TIMEOUT_MARGIN_SECONDS


def _size(n: int) -> str:
    for suffix, unit in (("m", 1024 * 1024), ("k", 1024)):
        if n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def render(
    *,
    run_timeout: float = var.RUN_TIMEOUT_SECONDS.default,
    max_body_bytes: int = var.MAX_BODY_BYTES.default,
    header_timeout: float = var.HEADER_TIMEOUT_SECONDS.default,
    file_max_bytes: int = var.FILE_MAX_BYTES.default,
    upstream: str | Sequence[str] = f"{var.HOST.default}:{var.PORT.default}",
    listen: str = "80",
    log_dir: str = "/var/log/nginx",
    site: str | None = None,
) -> str:
    """The site file with these values in place of the defaults it was written for; `upstream` is one
    gunicorn's address, or several (instances sharing PostgreSQL and Redis: docs/deploying.md)."""
    text = SITE.read_text(encoding="utf-8") if site is None else site
    seconds = read_timeout(run_timeout)
    servers = [upstream] if isinstance(upstream, str) else list(upstream)
    upstream = ", ".join(servers)
    server_lines = "\n".join(f"\\g<1> {server};" for server in servers)
    substitutions = [
        (r"^(\s*server) 127\.0\.0\.1:3000;", server_lines, 1),
        (r"^(\s*listen) 80;", rf"\g<1> {listen};", 1),
        (r"^(\s*proxy_read_timeout) 90s;", rf"\g<1> {seconds}s;", 1),
        (r"^(\s*proxy_send_timeout) 90s;", rf"\g<1> {seconds}s;", 1),
        (r"^(\s*client_max_body_size) 1m;", rf"\g<1> {_size(max_body_bytes)};", 1),
        (r"^(\s*client_header_timeout) 20s;", rf"\g<1> {math.ceil(header_timeout)}s;", 1),
        (r"^(\s*client_body_timeout) 20s;", rf"\g<1> {math.ceil(header_timeout)}s;", 1),
        (r"^(\s*client_max_body_size) 20544k;", rf"\g<1> {_size(file_max_bytes + MULTIPART_OVERHEAD_BYTES)};", 1),
        (r" /var/log/nginx/", f" {log_dir.rstrip('/')}/", 2),
    ]
    for pattern, replacement, expected in substitutions:
        text, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
        if count != expected:
            raise ValueError(f"deploy/nginx.conf: expected {expected} match(es) of {pattern!r}, found {count}")
    header = (
        f"# Rendered by deploy/nginx_site.py for RUN_TIMEOUT_SECONDS={run_timeout:g}, "
        f"MAX_BODY_BYTES={max_body_bytes}, FILE_MAX_BYTES={file_max_bytes}, "
        f"HEADER_TIMEOUT_SECONDS={header_timeout:g}, gunicorn at {upstream}\n"
        "# (the numbers in the comments below are those of the defaults).\n"
    )
    return header + text


def _upstream(env) -> str:
    bind = (env.get("BIND") or "").strip()
    if bind:
        return bind if bind.startswith("unix:") else bind.removeprefix("http://")
    host = var.HOST.read(env)
    if host in ("0.0.0.0", "::"):
        host = var.HOST.default
    elif ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{var.PORT.read(env)}"


def main(argv=None) -> None:
    """Print the rendered site for the environment (and .env)."""
    parser = argparse.ArgumentParser(prog="python -m deploy.nginx_site", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="80", help="nginx's listen address (default 80)")
    parser.add_argument("--log-dir", default="/var/log/nginx")
    parser.add_argument(
        "--upstream",
        action="append",
        metavar="HOST:PORT",
        help="a backend instance's address, once per instance (default: this one's BIND, or HOST and PORT)",
    )
    args = parser.parse_args(argv)
    env = {**dotenv_values(ROOT / ".env"), **os.environ}
    print(
        render(
            run_timeout=var.RUN_TIMEOUT_SECONDS.read(env),
            max_body_bytes=var.MAX_BODY_BYTES.read(env),
            header_timeout=var.HEADER_TIMEOUT_SECONDS.read(env),
            file_max_bytes=var.FILE_MAX_BYTES.read(env),
            upstream=args.upstream or _upstream(env),
            listen=args.listen,
            log_dir=args.log_dir,
        ),
        end="",
    )


if __name__ == "__main__":
    main()

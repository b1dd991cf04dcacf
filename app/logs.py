"""Log lines: a request id on every one, text or JSON, an access line per request, no secrets."""

from __future__ import annotations

import json
import logging
import os
import re
import time

from flask import Flask, g, has_app_context, request

from app.redaction import one_line, redactor
from app.settings import Settings

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("app.access")


class _RequestContext(logging.Filter):
    """Adds the request id and takes secrets out of every record."""

    def __init__(self, secrets: list[str]):
        super().__init__()
        self.redact = redactor(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = g.get("request_id", "-") if has_app_context() else "-"
        message = record.getMessage()
        cleaned = self.redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class _TextFormatter(logging.Formatter):
    """One line per record: the message escaped; only a traceback adds lines, each indented."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = one_line(record.message)
        return super().formatMessage(record)

    def formatException(self, exc_info) -> str:
        return "\n".join("    " + one_line(line) for line in super().formatException(exc_info).splitlines())


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _skip_unused_record_fields() -> None:
    """No log line of this backend shows where it was logged from or its thread: logging is told
    not to look them up for every record (the "Optimization" section of Python's logging HOWTO),
    which walks the stack and, under gevent, asks which greenlet is running. The process ID stays:
    gunicorn's own lines, in the same processes, show it (`[%(process)d]`), and it costs a getpid."""
    logging._srcfile = None  # no caller lookup (pathname, lineno, funcName)
    logging.logThreads = False
    logging.logMultiprocessing = False


def configure(settings: Settings) -> None:
    """Route the app's loggers to stderr in the configured format and level."""
    _skip_unused_record_fields()
    handler = logging.StreamHandler()
    handler.addFilter(_RequestContext([settings.openai_api_key or "", settings.jwt_key or "", *settings.api_tokens]))
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    logger = logging.getLogger("app")
    logger.handlers[:] = [handler]
    logger.setLevel(settings.log_level)
    logger.propagate = False


def init_app(app: Flask) -> None:
    """Give each request an id (taken from X-Request-ID when sane) and log one access line."""

    @app.before_request
    def start():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else os.urandom(16).hex()
        g.started = time.perf_counter()

    @app.after_request
    def finish(response):
        context = g._get_current_object()  # one lookup of each context proxy, not one per field
        method, path, status, user = request.method, request.path, response.status_code, context.get("user", "-")
        response.headers["X-Request-ID"] = context.get("request_id", "-")
        elapsed_ms = (time.perf_counter() - context.get("started", time.perf_counter())) * 1000
        access_log.info(
            "%s %s %d %.1fms user=%s",
            method,
            path,
            status,
            elapsed_ms,
            user,
            extra={
                "fields": {"method": method, "path": path, "status": status, "ms": round(elapsed_ms, 1), "user": user}
            },
        )
        return response

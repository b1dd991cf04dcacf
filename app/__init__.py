"""The app factory: wires settings, logging, errors, CORS and blueprints, and nothing else."""

from __future__ import annotations

import logging
import os

from flask import Flask, request
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from app import logs, metrics, ratelimit, upstream_probe
from app.api import SERVICES_KEY, assistant_type_list, health, openapi, page, run_events, v1_dialect, validation
from app.api import errors as api_errors
from app.api.assistants import bp as assistants_bp
from app.api.files import bp as files_bp
from app.api.run_events import bp as run_events_bp
from app.api.runs import bp as runs_bp
from app.api.threads import bp as threads_bp
from app.api.usage import bp as usage_bp
from app.runs.recovery import Heartbeat
from app.services import build_services
from app.settings import Settings, load_settings
from app.store import schema

EXPOSED_HEADERS = ["X-Request-ID", "openai-poll-after-ms", "Retry-After", "x-should-retry", "Idempotent-Replayed"]


def create_app(settings: Settings | None = None) -> Flask:
    """Build the app; settings are read from the environment when not given."""
    settings = settings or load_settings()
    logs.configure(settings)
    app = _Backend(__name__, static_folder=None)  # app/static is the chat page's, served only when it is on
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False
    if settings.forwarded_proxies:
        hops = settings.forwarded_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    schema.prepare(settings.database_url, settings.database_auto_migrate)
    services = app.extensions[SERVICES_KEY] = build_services(settings)
    Heartbeat(services).start()
    run_events.init_app(app, settings)  # the event log of streamed runs, for clients that reattach

    logs.init_app(app)
    app.before_request(validation.complete_body)  # a body cut short is refused before anything else
    api_errors.init_app(app)
    metrics.init_app(app)
    _cors(app, settings)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    _register_api(app, settings)
    app.register_blueprint(assistant_type_list.bp, url_prefix="/api/openai")
    if settings.chat_page:
        app.register_blueprint(page.bp)
    ratelimit.init_app(app, settings)

    log = logging.getLogger("app")
    if settings.auth_mode == "none":
        log.warning("AUTH_MODE=none: every caller is the same anonymous user; for local development only")
    if settings.offline:
        log.warning("OFFLINE UPSTREAM: answers are echo replies from the built-in simulator, not OpenAI")
    elif not os.environ.get(upstream_probe.PROBED_VARIABLE):
        upstream_probe.probe_in_background(settings.openai_base_url, settings.openai_api_key, log.warning)
    log.info("engine %s, assistant types: %s", settings.engine, ", ".join(t.name for t in settings.assistant_types))
    return app


class _Backend(Flask):
    """Flask, asking once per hook or view whether it is a coroutine function, not at every request."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_callables: dict = {}

    def ensure_sync(self, func):
        sync = self._sync_callables.get(func)
        if sync is None:
            sync = self._sync_callables[func] = super().ensure_sync(func)
        return sync


def _cors(app: Flask, settings: Settings) -> None:
    """CORS headers for the listed origins, worked out only for requests that name an origin.

    A request without `Origin` is outside CORS, and flask-cors told not to always send adds
    nothing to it; skipping its hook then saves ~40 us on every call of a non-browser client.
    """
    CORS(app, origins=list(settings.cors_origins), expose_headers=EXPOSED_HEADERS, max_age=600, always_send=False)
    hooks = app.after_request_funcs[None]
    index = next(i for i, hook in enumerate(hooks) if hook.__name__ == "cors_after_request")
    cors_headers = hooks[index]

    def cors_when_asked(response):
        return cors_headers(response) if "Origin" in request.headers else response

    hooks[index] = cors_when_asked


def _register_api(app: Flask, settings: Settings) -> None:
    """The API blueprints under /api/openai (type from the body), /api/assistants/<type> (type from the URL)
    and /v1 (type from the body, for the official SDKs: see app/api/v1_dialect.py)."""
    for bp in (threads_bp, runs_bp, run_events_bp, files_bp, assistants_bp, usage_bp):
        app.register_blueprint(bp, name=f"openai_{bp.name}", url_prefix="/api/openai")
        app.register_blueprint(bp, name=f"v1_{bp.name}", url_prefix=v1_dialect.PREFIX)
        for assistant in settings.assistant_types:
            app.register_blueprint(
                bp,
                name=f"type_{assistant.name}_{bp.name}",
                url_prefix=f"/api/assistants/{assistant.name}",
                url_defaults={"assistant_type": assistant.name} if bp is runs_bp else {},
            )

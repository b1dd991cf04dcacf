"""`/healthz` (the process serves) and `/readyz` (configuration and database answer, schema at head)."""

from __future__ import annotations

import logging

from flask import Blueprint, jsonify

from app.api import services
from app.store import schema

bp = Blueprint("health", __name__)
log = logging.getLogger("app.health")


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz():
    b = services()
    try:
        b.records.ping()
        current = schema.is_current(b.records.db)
    except Exception as exc:  # any database failure means "not ready"
        log.warning("readiness: database does not answer: %s", exc.__class__.__name__)
        return jsonify(status="unavailable", error="The database does not answer."), 503
    if not current:
        log.warning("readiness: the database schema is behind; run `%s`", schema.MIGRATE_COMMAND)
        return jsonify(status="unavailable", error="The database schema is not up to date."), 503
    return jsonify(status="ok", engine=b.settings.engine, offline=b.settings.offline)

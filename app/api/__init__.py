"""The web layer: blueprints, request validation, and the HTTP answers of the services' results."""

from __future__ import annotations

from flask import current_app, g, request

from app.auth import authenticate
from app.services import Services

SERVICES_KEY = "services"


def services() -> Services:
    """The services of the current app."""
    return current_app.extensions[SERVICES_KEY]


def authenticate_caller() -> None:
    """Know the caller before an API view runs (a `before_request` hook of the API blueprints)."""
    # A CORS preflight carries no credentials, and must get a 200; the rate
    # limiter may have authenticated the caller already.
    if request.method != "OPTIONS" and "user" not in g:
        authenticate(services().settings)

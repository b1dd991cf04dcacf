"""The chat page at `/` and its files under `/chat/`, served only with CHAT_PAGE=true.

The page is static (app/static/chat) and speaks to the API from the browser like
any other client; it needs no credentials to load, and asks for a token when the
API answers 401.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint

FILES = Path(__file__).resolve().parent.parent / "static" / "chat"
# Only this server's own files: no inline script or style, nothing from elsewhere.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

bp = Blueprint("page", __name__, static_folder=FILES, static_url_path="/chat")


@bp.get("/")
def index():
    return bp.send_static_file("index.html")


@bp.after_request
def protect(response):
    response.headers["Content-Security-Policy"] = POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response

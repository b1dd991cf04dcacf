"""The fake's busiest route answered without Flask: a plain look at a response.

A benchmark's thousands of waiting runs each look at their response about once a
second. Through Flask a look cost the fake's one process ~0.37 ms under gunicorn, so
at 4,000 polled runs the fake, not the backend under test, ran out of CPU. This
answers `GET /v1/responses/{id}` (no query) itself when nothing can make the answer
differ from the Flask route's: the right key, a response that exists, no knob that
fails or replaces polls. Everything else goes on to Flask, which answers as before;
the counters move the same either way.
"""

from __future__ import annotations

import json
import re
import secrets

from .responses import find_response

ROUTE = "GET /v1/responses/{response_id}"
_PATH = re.compile(r"/v1/responses/([A-Za-z0-9_-]+)")


def answer_polls_directly(app, key_problem) -> None:
    """Put the direct answer in front of `app.wsgi_app`; `key_problem(header)` is the guard's key check."""
    fake = app.fake
    flask_wsgi = app.wsgi_app

    def wsgi(environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and not environ.get("QUERY_STRING"):
            match = _PATH.fullmatch(environ.get("PATH_INFO", ""))
            if match and key_problem(environ.get("HTTP_AUTHORIZATION", "")) is None:
                body = _look(fake, match.group(1))
                if body is not None:
                    start_response(
                        "200 OK",
                        [
                            ("Content-Type", "application/json"),
                            ("Content-Length", str(len(body))),
                            ("x-request-id", "req_" + secrets.token_hex(16)),
                        ],
                    )
                    return [body]
        return flask_wsgi(environ, start_response)

    app.wsgi_app = wsgi


def _look(fake, response_id: str) -> bytes | None:
    """The response as the Flask route would send it, counted; None when Flask must answer."""
    config = fake.config
    if config.garbage or config.fail_every_nth_poll or response_id not in fake.responses:
        return None
    fake.count_request(ROUTE)
    fake.record_poll(response_id)
    with fake.lock:
        answer = find_response(fake, response_id).to_api()
    # Flask's JSON answer, byte for byte (compact, keys in order, ASCII, a final newline).
    return (json.dumps(answer, separators=(",", ":")) + "\n").encode()

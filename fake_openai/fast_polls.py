"""The fake's busiest routes answered without Flask: plain looks at a response or a run.

A benchmark's thousands of waiting runs each look at their response (or Assistants
run) about once a second. Through Flask a look cost the fake's one process ~0.4 ms
under gunicorn, so at 4,000 polled runs the fake, not the backend under test, ran out
of CPU. This answers `GET /v1/responses/{id}` and `GET /v1/threads/{id}/runs/{id}`
(no query) itself when nothing can make the answer differ from the Flask route's: the
right key (and beta header), an object that exists, no knob that fails, hints or
replaces polls. Everything else goes on to Flask, which answers as before; the
counters move the same either way.
"""

from __future__ import annotations

import json
import re
import secrets

from . import assistants
from .responses import find_response

_RESPONSE = re.compile(r"/v1/responses/([A-Za-z0-9_-]+)")
_RUN = re.compile(r"/v1/threads/([A-Za-z0-9_-]+)/runs/([A-Za-z0-9_-]+)")


def answer_polls_directly(app, key_problem) -> None:
    """Put the direct answers in front of `app.wsgi_app`; `key_problem(header)` is the guard's key check."""
    fake = app.fake
    flask_wsgi = app.wsgi_app

    def wsgi(environ, start_response):
        if environ["REQUEST_METHOD"] == "GET" and not environ.get("QUERY_STRING"):
            body = _look(fake, environ, key_problem)
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


def _look(fake, environ, key_problem) -> bytes | None:
    """The object as the Flask route would send it, counted; None when Flask must answer."""
    config = fake.config
    if config.garbage or config.fail_every_nth_poll or key_problem(environ.get("HTTP_AUTHORIZATION", "")):
        return None
    path = environ.get("PATH_INFO", "")
    if match := _RESPONSE.fullmatch(path):
        (job_id,) = match.groups()
        if job_id not in fake.responses:
            return None
        route, answer = "GET /v1/responses/{response_id}", lambda: find_response(fake, job_id).to_api()
    elif match := _RUN.fullmatch(path):
        thread_id, job_id = match.groups()
        run = fake.runs.get(job_id)
        plain = config.poll_after_ms is None and "assistants=v2" in environ.get("HTTP_OPENAI_BETA", "")
        if not plain or run is None or run.thread is not fake.threads.get(thread_id):
            return None
        route, answer = "GET /v1/threads/{thread_id}/runs/{run_id}", lambda: assistants.get_run(fake, *match.groups())
    else:
        return None
    fake.count_request(route)
    fake.record_poll(job_id)
    with fake.lock:
        body = answer()
    # Flask's JSON answer, byte for byte (compact, keys in order, ASCII, a final newline).
    return (json.dumps(body, separators=(",", ":")) + "\n").encode()

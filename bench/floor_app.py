"""The least a Python backend can do for `POST .../runs`, as WSGI apps for bench/start_cost.py.

Served by gunicorn with gevent workers, like the backend, so that the CPU of a run's
start can be split into what the stack costs before any of the backend's own work.
`FLOOR_LEVEL` picks the app:

- `wsgi`: a bare WSGI callable answering a fixed JSON object (gunicorn and gevent alone);
- `flask`: a Flask route that reads the JSON body and answers a JSON object;
- `seed`: the same route doing the seed's work, as the seed does it: create the run on the
  upstream's Assistants API and look at it once, with the backend's own lean HTTP client on
  a kept-alive connection, and answer the run (no auth, limits, records, logs or metrics).
"""

from __future__ import annotations

import json
import os

from flask import Flask, jsonify, request

from app.engines.http1 import Http1

LEVEL = os.environ.get("FLOOR_LEVEL", "seed")
_ANSWER = b'{"object":"thread.run","status":"completed"}'


def _bare(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(_ANSWER)))])
    return [_ANSWER]


def _flask() -> Flask:
    flask_app = Flask(__name__)
    upstream = Http1(
        os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:9/v1"),
        {
            "Authorization": f"Bearer {os.environ.get('OPENAI_API_KEY', '')}",
            "OpenAI-Beta": "assistants=v2",
        },
    )

    @flask_app.get("/healthz")
    def healthz():
        return jsonify(status="ok")

    @flask_app.post("/api/openai/threads/<thread_id>/runs")
    def create_run(thread_id):
        body = request.get_json()
        if LEVEL == "flask":
            return jsonify(object="thread.run", status="completed", assistant_type=body["assistant_type"])
        created = upstream.request(
            "POST", f"/threads/{thread_id}/runs", json.dumps({"assistant_id": "asst_bench"}).encode(), 60, 10
        ).json()
        return jsonify(upstream.request("GET", f"/threads/{thread_id}/runs/{created['id']}", None, 60, 10).json())

    return flask_app


app = _bare if LEVEL == "wsgi" else _flask()

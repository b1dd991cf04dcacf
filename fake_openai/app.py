"""The Flask app: OpenAI-style HTTP around the simulator state (auth, headers, errors, routes)."""

import json
import re
import secrets
import socket
import time

from flask import Flask, Response, g, request, stream_with_context
from werkzeug.exceptions import HTTPException

from . import assistants, control, edits, responses, streaming
from .errors import ApiError, bad_request, transient
from .fast_polls import answer_polls_directly
from .knowledge_api import register as register_knowledge
from .listing import parse_list_params
from .state import FakeState

NO_KEY_MESSAGE = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field (with blank username) if "
    "you're accessing the API from your browser and are prompted for a username and password. You can "
    "obtain an API key from https://platform.openai.com/account/api-keys."
)
BAD_JSON_MESSAGE = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your HTTP "
    "library correctly. The OpenAI API expects a JSON payload, but what was sent was not valid JSON. If you "
    "have trouble figuring out how to fix this, please contact us through our help center at help.openai.com.)"
)
BETA_MISSING_MESSAGE = (
    "You must provide the 'OpenAI-Beta' header to access the Assistants API. "
    "Please try again by setting the header 'OpenAI-Beta: assistants=v2'."
)
BETA_V1_MESSAGE = (
    "The v1 Assistants API has been deprecated. Please try again by setting the header 'OpenAI-Beta: assistants=v2'."
)
_PLACEHOLDER = re.compile(r"<(?:\w+:)?(\w+)>")


def mask_key(key):
    """The key as OpenAI echoes it: a few leading characters, stars, the last four."""
    head = 5 if len(key) >= 13 else 3
    tail = 4 if len(key) >= head + 5 else 0
    if len(key) <= head:
        return key
    return key[:head] + "*" * (len(key) - head - tail) + key[len(key) - tail :]


# What a misconfigured proxy in front of the upstream might answer (knob `garbage`).
GARBAGE = "<html><body><h1>It works!</h1></body></html>"


def create_fake_app(api_key=None, default_duration=0.3, label=None):
    """A WSGI app speaking the OpenAI subset; its state object is `app.fake`."""
    app = Flask(__name__)
    app.json.sort_keys = False
    app.json.compact = True
    fake = FakeState(default_duration=default_duration, label=label)
    app.fake = fake
    templates = {}

    def locked(operation, *args):
        with fake.lock:
            return operation(fake, *args)

    def body():
        if not request.data:
            return {}
        try:
            parsed = json.loads(request.data)
        except ValueError:
            raise bad_request(BAD_JSON_MESSAGE) from None
        if not isinstance(parsed, dict):
            raise bad_request(BAD_JSON_MESSAGE)
        if "route" in g:
            fake.record_body(g.route, parsed)
        return parsed

    def key_problem(authorization):
        """The 401 an Authorization header earns, or None when it carries the key."""
        scheme, _, token = authorization.partition(" ")
        token = token.strip() if scheme.lower() == "bearer" else ""
        if not token:
            return ApiError(401, NO_KEY_MESSAGE)
        if api_key is not None and token != api_key:
            return ApiError(
                401,
                f"Incorrect API key provided: {mask_key(token)}. "
                "You can find your API key at https://platform.openai.com/account/api-keys.",
                code="invalid_api_key",
            )
        return None

    def polled(job_id, operation, *args, poll_hint=False):
        # The poll counts (and may fail) before the lookup, like a flaky upstream in front of it.
        if fake.record_poll(job_id):
            raise transient(fake.config.fail_kind, fake.config.retry_after)
        answer = locked(operation, *args)
        headers = {}
        # Only Assistants runs carry the hint: the Responses spec declares no such header.
        if poll_hint and fake.config.poll_after_ms is not None:
            headers["openai-poll-after-ms"] = str(fake.config.poll_after_ms)
        return answer, 200, headers

    @app.before_request
    def guard():
        if not request.path.startswith("/v1/"):
            return
        rule = request.url_rule
        if rule is not None:
            template = templates.get(rule.rule)
            if template is None:
                template = templates[rule.rule] = _PLACEHOLDER.sub(r"{\1}", rule.rule)
            g.route = f"{request.method} {template}"
            fake.count_request(g.route)
        problem = key_problem(request.headers.get("Authorization", ""))
        if problem is not None:
            raise problem
        if request.path.startswith("/v1/threads"):
            beta = request.headers.get("OpenAI-Beta", "")
            if "assistants=v2" not in beta:
                message = BETA_V1_MESSAGE if "assistants=v1" in beta else BETA_MISSING_MESSAGE
                raise bad_request(message, code="invalid_beta")

    @app.after_request
    def request_id(response):
        if fake.config.garbage and request.path.startswith("/v1/"):
            response = Response(GARBAGE, 200, mimetype="text/html")
        response.headers["x-request-id"] = "req_" + secrets.token_hex(16)
        return response

    def faulty_create(make):
        """`make()` (a run's creation), or the fault the `fail_next_create` knob scripts for it."""
        with fake.lock:
            fault, fake.config.fail_next_create = fake.config.fail_next_create, None
        if fault is None:
            return make()
        how, when = fault.split("-")
        if when == "after":
            make()  # the run exists; its creator never hears of it
        if how == "reset":
            connection = request.environ.get("werkzeug.socket")
            if connection is not None:  # werkzeug's server only
                connection.shutdown(socket.SHUT_RDWR)
        elif how == "stall":
            time.sleep(fake.config.stall_seconds)
        raise transient("500")

    @app.errorhandler(ApiError)
    def api_error(error):
        return error.body(), error.status, error.headers

    @app.errorhandler(HTTPException)
    def http_error(error):
        if error.code == 405:
            message = f"Invalid method for URL ({request.method} {request.path})"
        elif error.code == 404:
            message = f"Invalid URL ({request.method} {request.path})"
        else:
            message = error.description
        return ApiError(error.code, message).body(), error.code

    register_knowledge(app, fake, body)  # files, vector stores, run steps

    # Assistants v2
    @app.post("/v1/threads")
    def create_thread():
        return locked(assistants.create_thread, body())

    @app.get("/v1/threads/<thread_id>")
    def get_thread(thread_id):
        return locked(assistants.get_thread, thread_id)

    @app.delete("/v1/threads/<thread_id>")
    def delete_thread(thread_id):
        return locked(assistants.delete_thread, thread_id)

    @app.post("/v1/threads/<thread_id>/messages")
    def create_message(thread_id):
        return locked(assistants.create_message, thread_id, body())

    @app.get("/v1/threads/<thread_id>/messages")
    def list_messages(thread_id):
        params = parse_list_params(request.args)
        return locked(assistants.list_messages, thread_id, params, request.args.get("run_id"))

    @app.post("/v1/threads/<thread_id>/runs")
    def create_run(thread_id):
        data = body()
        return faulty_create(lambda: locked(assistants.create_run, thread_id, data))

    @app.get("/v1/threads/<thread_id>/runs")
    def list_runs(thread_id):
        return locked(assistants.list_runs, thread_id, parse_list_params(request.args))

    @app.get("/v1/threads/<thread_id>/runs/<run_id>")
    def get_run(thread_id, run_id):
        return polled(run_id, assistants.get_run, thread_id, run_id, poll_hint=True)

    @app.post("/v1/threads/<thread_id>/runs/<run_id>/submit_tool_outputs")
    def submit_tool_outputs(thread_id, run_id):
        return locked(assistants.submit_tool_outputs, thread_id, run_id, body())

    @app.post("/v1/threads/<thread_id>/runs/<run_id>/cancel")
    def cancel_run(thread_id, run_id):
        return locked(assistants.cancel_run, thread_id, run_id)

    # Conversations + Responses
    @app.post("/v1/conversations")
    def create_conversation():
        return locked(responses.create_conversation, body())

    @app.get("/v1/conversations/<conversation_id>")
    def get_conversation(conversation_id):
        return locked(responses.get_conversation, conversation_id)

    @app.delete("/v1/conversations/<conversation_id>")
    def delete_conversation(conversation_id):
        return locked(responses.delete_conversation, conversation_id)

    @app.post("/v1/conversations/<conversation_id>/items")
    def create_items(conversation_id):
        return locked(responses.create_items, conversation_id, body())

    @app.get("/v1/conversations/<conversation_id>/items")
    def list_items(conversation_id):
        return locked(responses.list_items, conversation_id, request.args)

    def event_stream(response, starting_after=-1, at_creation=False):
        return Response(
            stream_with_context(streaming.events(fake, response, starting_after, at_creation)),
            mimetype="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )

    @app.post("/v1/responses")
    def create_response():
        data = body()
        return faulty_create(lambda: make_response(data))

    def make_response(data):
        with fake.lock:
            if data.get("stream") is True:
                streaming.refuse_if_off(fake)
            response = responses.create_response(fake, data)
            if not response.streamable:
                return response.to_api()
        return event_stream(response, at_creation=True)

    @app.get("/v1/responses/<response_id>")
    def get_response(response_id):
        if request.args.get("stream") == "true":
            starting_after = request.args.get("starting_after", "-1")
            if not starting_after.lstrip("-").isdigit():
                raise bad_request("'starting_after' must be a whole number", param="starting_after")
            response = locked(streaming.open_stream, response_id)
            return event_stream(response, int(starting_after))
        return polled(response_id, responses.get_response, response_id)

    @app.post("/v1/responses/<response_id>/cancel")
    def cancel_response(response_id):
        return locked(responses.cancel_response, response_id)

    edits.register(app, fake, body)
    control.register(app, fake, body)
    answer_polls_directly(app, key_problem)
    return app

"""A fake OpenAI upstream (Assistants v2 + Responses/Conversations) for tests and benchmarks.

    app = create_fake_app(api_key=None, default_duration=0.3, label=None)  # a Flask/WSGI app
    fake = app.fake  # .config knobs, .reset(), .stats(), .run_info(id), .forget(response_id)

Directives in the latest user message script a run (see `scripting`):
`[fake status=<outcome> duration=<seconds>]`, and tool calls with
`[fake call=<tool> args=<JSON object> rounds=<n>]`. File contents script vector stores:
`[fake unsupported]` (processing fails), `[fake processing=<seconds>]`. What the fake does, and which of it
is documented OpenAI behaviour and which a guess: docs/fake-upstream.md.
Serve it with `python -m fake_openai --host 127.0.0.1 --port 9000`.
"""

from .app import create_fake_app

__all__ = ["create_fake_app"]

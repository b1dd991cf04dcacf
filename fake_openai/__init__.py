"""A fake OpenAI upstream (Assistants v2 + Responses/Conversations) for tests and benchmarks.

    app = create_fake_app(api_key=None, default_duration=0.3, label=None)  # a Flask/WSGI app
    fake = app.fake  # .config knobs, .reset(), .stats(), .run_info(id), .forget(response_id)

A `[fake status=<outcome> duration=<seconds>]` directive in the latest user message scripts a run.
Serve it with `python -m fake_openai --host 127.0.0.1 --port 9000`.
"""

from .app import create_fake_app

__all__ = ["create_fake_app"]

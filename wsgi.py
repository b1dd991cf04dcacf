"""The WSGI entry point: `gunicorn wsgi:app`, or `flask --app wsgi run`."""

import sys

from dotenv import load_dotenv

from app import create_app
from app.gevent_tuning import adjust_for_gevent
from app.settings import ConfigError

load_dotenv()
adjust_for_gevent()  # a no-op unless gunicorn's gevent worker has patched the standard library
try:
    app = create_app()
except ConfigError as error:
    # One clear line; exit code 3 makes gunicorn stop the whole server instead of restarting the worker.
    print(f"configuration error: {error}", file=sys.stderr)
    sys.exit(3)

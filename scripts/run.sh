#!/usr/bin/env bash
# Sets up the runtime requirements and runs the development server, on HOST:PORT
# from the environment or .env (default 127.0.0.1:3000).
# With no OpenAI key configured (environment or .env), it runs against the
# built-in offline upstream, with AUTH_MODE=none unless AUTH_MODE is set
# (scripts/dev_env.py decides).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

exports="$(.venv/bin/python scripts/dev_env.py .env)"
eval "$exports"
.venv/bin/python -m app.store.migrate
exec .venv/bin/flask --app wsgi run --host "$HOST" --port "$PORT" --with-threads

#!/usr/bin/env bash
# Sets everything up and runs the development server on port 3000.
# With no OpenAI key configured (environment or .env), it runs against the
# built-in offline upstream, with AUTH_MODE=none unless AUTH_MODE is set.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# What the environment and .env configure (the environment wins, as in the app).
configured() {
    .venv/bin/python -c 'import os, sys
from dotenv import dotenv_values
env = {**dotenv_values(".env"), **os.environ}
print(" ".join(k for k, v in env.items() if v and k.startswith(tuple(sys.argv[1:]))))' "$@"
}

if [[ -z "$(configured OPENAI_API_KEY OPENAI_BASE_URL)" ]]; then
    echo "No OPENAI_API_KEY: using the OFFLINE upstream (echo replies, not OpenAI)." >&2
    export OPENAI_BASE_URL=offline
    [[ -n "$(configured AUTH_MODE)" ]] || export AUTH_MODE=none
    if [[ -z "$(configured ASSISTANT_)" ]]; then
        export ASSISTANT_CURATOR_MODEL=gpt-4o ASSISTANT_CURATOR_ID=asst_offline_curator
        export ASSISTANT_CURATOR_INSTRUCTIONS="You are the curator."
    fi
fi
.venv/bin/python -m app.migrate
exec .venv/bin/flask --app wsgi run --host "${HOST:-127.0.0.1}" --port "${PORT:-3000}" --with-threads

#!/usr/bin/env bash
# Sets everything up and runs the development server on port 3000.
# With no OpenAI key configured, it runs against the built-in offline upstream.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[[ -f .env ]] && set -a && source .env && set +a

if [[ -z "${OPENAI_API_KEY:-}" && -z "${OPENAI_BASE_URL:-}" ]]; then
    echo "No OPENAI_API_KEY: using the OFFLINE upstream (echo replies, not OpenAI)." >&2
    export OPENAI_BASE_URL=offline
    export AUTH_MODE="${AUTH_MODE:-none}"
    if ! env | grep -q '^ASSISTANT_'; then
        export ASSISTANT_CURATOR_MODEL=gpt-4o ASSISTANT_CURATOR_ID=asst_offline_curator
        export ASSISTANT_CURATOR_INSTRUCTIONS="You are the curator."
    fi
fi
.venv/bin/python -m app.migrate
exec .venv/bin/flask --app wsgi run --host "${HOST:-127.0.0.1}" --port "${PORT:-3000}" --with-threads

#!/usr/bin/env bash
# The "Fast and wide" benchmark: `bash bench/run.sh [--quick] [python -m bench options]`.
# Uses the Python in $PYTHON, or .venv with the development requirements (scripts/setup.sh --dev).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    bash scripts/setup.sh --dev
    PYTHON=.venv/bin/python
fi
exec "$PYTHON" -m bench "$@"

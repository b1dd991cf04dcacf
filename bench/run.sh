#!/usr/bin/env bash
# The "Fast and wide" benchmark: `bash bench/run.sh [--quick] [python -m bench options]`.
# Uses .venv (made by scripts/setup.sh when missing), or the Python in $PYTHON.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [[ ! -x "$PYTHON" ]]; then
    bash scripts/setup.sh
fi
exec "$PYTHON" -m bench "$@"

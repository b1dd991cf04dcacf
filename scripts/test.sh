#!/usr/bin/env bash
# Sets everything up (runtime and development requirements, the Debian packages
# the tests start), then runs the linter and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --servers
.venv/bin/ruff check .
exec .venv/bin/python -m pytest "$@"

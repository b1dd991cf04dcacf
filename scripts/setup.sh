#!/usr/bin/env bash
# Installs what the project needs: a virtualenv with the pinned requirements,
# and (with --servers) the Debian packages the tests start for real (nginx,
# PostgreSQL, Redis).
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--servers" ]]; then
    missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    if ((${#missing[@]})); then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi
if [[ ! -f .venv/.installed ]] || [[ requirements.txt -nt .venv/.installed ]]; then
    .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt
    touch .venv/.installed
fi

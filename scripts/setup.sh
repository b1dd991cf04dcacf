#!/usr/bin/env bash
# Installs what the project needs into .venv.
#   bash scripts/setup.sh            the runtime requirements only (requirements.txt)
#   bash scripts/setup.sh --dev      also the test and benchmark tools (requirements-dev.txt)
#   bash scripts/setup.sh --servers  --dev, and the Debian packages the tests start for real
#                                    (nginx, PostgreSQL, Redis, and Chromium with its driver for
#                                    the chat page's browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
servers=0
for arg in "$@"; do
    case "$arg" in
        --dev) dev=1 ;;
        --servers) dev=1 servers=1 ;;
        *) echo "usage: $0 [--dev] [--servers]" >&2; exit 2 ;;
    esac
done

if ((servers)); then
    missing=()
    command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
    command -v redis-server >/dev/null || missing+=(redis-server)
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    [[ -x /usr/bin/chromedriver ]] || missing+=(chromium-driver)
    if ((${#missing[@]})); then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

if [[ ! -x .venv/bin/python ]]; then
    python3 -m venv .venv
fi

# Install a requirements file once, and again whenever it (or a file it includes) changes:
# .venv/.installed-<file> is the marker of the last install.
install() {
    local file=$1 marker=".venv/.installed-$1"
    if [[ ! -f "$marker" ]] || [[ "$file" -nt "$marker" ]] || [[ requirements.txt -nt "$marker" ]]; then
        .venv/bin/pip install -q --disable-pip-version-check -r "$file"
        touch "$marker"
    fi
}
install requirements.txt
if ((dev)); then
    install requirements-dev.txt
fi

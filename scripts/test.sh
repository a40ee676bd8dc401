#!/usr/bin/env bash
# Install (if needed) and run the whole test suite; extra arguments go to pytest.
# Browser tests drive Debian's chromium (/usr/bin/chromium) with Playwright; it is installed here with
# apt-get when missing (Playwright never downloads a browser of its own).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    else
        echo "browser tests need Debian's chromium: run 'sudo apt-get install -y chromium' first" >&2
        exit 1
    fi
fi
scripts/setup.sh
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest "$@"

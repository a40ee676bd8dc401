#!/usr/bin/env bash
# Install (if needed), index content/ (incremental) and serve the API on http://127.0.0.1:8000.
# Settings come from KB_* variables (see README); extra arguments go to `kb serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
.venv/bin/kb index
exec .venv/bin/kb serve "$@"

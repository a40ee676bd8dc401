#!/usr/bin/env bash
# Install (if needed), index content/ (incremental) and serve the API on http://127.0.0.1:8000.
# Settings come from KB_* variables (see README); extra arguments go to `kb serve` (--content and --index-dir
# to `kb index` too).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=1
# Before any slow work, the checks `kb serve` makes (the address is free, the index is this content's):
# exits with kb serve's message if one fails, else prints the content and index folders it will use.
folders="$(.venv/bin/python -m cli.preflight "$@")"
{ read -r content_dir; read -r index_dir; } <<< "$folders"
.venv/bin/kb index --content "$content_dir" --index-dir "$index_dir"
exec .venv/bin/kb serve "$@"

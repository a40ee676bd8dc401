#!/usr/bin/env bash
# Create .venv (if missing) and install KB Search with its test and milvus extras (the Milvus index backend's
# contract tests run for real), unless that install is up to date.
# torch is installed first, pinned to the CPU wheel that lies on this machine's disk, in the same step as
# everything else: a bare `torch` requirement would pull a multi-GB CUDA build.
# A stamp in .venv (hash of pyproject.toml, this script and the venv's Python version) records the last
# successful install: while it matches and .venv/bin/kb exists, pip is not run at all. KB_REINSTALL=1 forces it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3.11}"
TORCH="torch==2.13.0"
STAMP=.venv/.kb-install-stamp
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp="$( { cat pyproject.toml scripts/setup.sh; echo "$TORCH"; .venv/bin/python -c 'import sys; print(sys.version)'; } \
          | sha256sum | cut -d' ' -f1)"
if [ "${KB_REINSTALL:-0}" != 1 ] && [ -x .venv/bin/kb ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$stamp" ]; then
    exit 0  # already installed from this pyproject.toml
fi
rm -f "$STAMP"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "$TORCH"
# setuptools warns on every editable install about same-named folders in the working directory (the
# packages here *are* those folders): not a problem, so that banner is silenced.
PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install --quiet -e ".[test,milvus]"
echo "$stamp" > "$STAMP"
echo "installed into $(pwd)/.venv"

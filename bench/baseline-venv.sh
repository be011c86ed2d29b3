#!/usr/bin/env bash
# Makes a virtualenv with Flask and gunicorn for the baseline; prints its bin directory.
set -euo pipefail
venv="$1"
if [ ! -x "$venv/bin/gunicorn" ]; then
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet flask gunicorn >&2
fi
echo "$venv/bin"

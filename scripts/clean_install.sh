#!/usr/bin/env bash
# Proves the README's first command: a venv with `pip install .` alone (no extras, no dev tools) serves
# and transcribes a clip. A run-time import that only an extra or the dev tools install fails here.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
trap 'rm -rf "$(dirname "$venv")"' EXIT
python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet .
"$venv/bin/python" scripts/clean_install_check.py "$venv"

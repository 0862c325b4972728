#!/usr/bin/env bash
# Installs earshot with its dev tools into .venv, then runs lint, type checks, the clean-install check (a bare
# `pip install .` serves and transcribes) and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,clients]'
.venv/bin/ruff check earshot tests bench
.venv/bin/ruff format --check earshot tests bench
.venv/bin/mypy
bash scripts/clean_install.sh
.venv/bin/pytest "$@"

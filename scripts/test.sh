#!/usr/bin/env bash
# Installs everything the tests need, then runs lint, types and every test (none skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --disable-pip-version-check -q -e '.[test,demo,bench]'
"$PY" -m ruff check .
"$PY" -m ruff format --check asgi_auth wsgi_auth tests benchmarks
"$PY" -m mypy
"$PY" -m pytest -q -p no:cacheprovider "$@"

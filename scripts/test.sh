#!/usr/bin/env bash
# Installs everything the tests need, then runs lint, types and every test (none skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# The interop tests run a real OpenID provider (oidc-provider, Node.js); tests/oidc_provider.py
# installs its npm packages from the lock file. Node itself comes from Debian if missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
# The end-to-end benchmark tests drive real servers with wrk (Debian).
bash scripts/bench-setup.sh
"$PY" -m pip install --disable-pip-version-check -q -e '.[test,demo,bench]'
"$PY" -m ruff check .
"$PY" -m ruff format --check asgi_auth wsgi_auth tests benchmarks
"$PY" -m mypy
"$PY" -m pytest -q -p no:cacheprovider "$@"

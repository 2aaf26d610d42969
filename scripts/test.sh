#!/usr/bin/env bash
# Installs everything the tests need, then runs lint, types and every test (none skipped).
#
# Python packages go into the active virtualenv, or into ./.venv (made when missing), never
# into the system's Python: Debian's and others' refuse pip there (PEP 668).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -n "${PYTHON:-}" ]; then
    PY=$PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ]; then
    PY=$VIRTUAL_ENV/bin/python
else
    [ -x .venv/bin/python ] || bash scripts/venv.sh .venv
    PY=.venv/bin/python
fi
# The interop tests run a real OpenID provider (oidc-provider, Node.js); tests/oidc_provider.py
# installs its npm packages from the lock file. Node itself comes from Debian if missing.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null
fi
# The Redis key store's tests run a real redis-server (tests/redis_server.py), from Debian.
bash scripts/redis-setup.sh
# The end-to-end benchmark tests drive real servers with wrk (Debian).
bash scripts/bench-setup.sh
"$PY" -m pip install --disable-pip-version-check -q -e '.[test,demo,bench]'
"$PY" -m ruff check .
"$PY" -m ruff format --check asgi_auth wsgi_auth tests benchmarks scripts
"$PY" -m mypy
"$PY" -m pytest -q -p no:cacheprovider "$@"

#!/usr/bin/env bash
# The suite on the lowest versions that pyproject.toml declares (scripts/lowest.py), in a
# brand-new virtualenv: a lower bound that no longer works fails here instead of on a
# user's machine. The test tools themselves are left to pip.
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d -t authgate-lowest-XXXXXX)
trap 'rm -rf "$work"' EXIT
bash scripts/venv.sh "$work/venv"
bash scripts/redis-setup.sh  # tests/test_redis_store.py runs a real redis-server
PY=$work/venv/bin/python
"$PY" scripts/lowest.py >"$work/constraints.txt"
echo "lowest versions: $(tr '\n' ' ' <"$work/constraints.txt")"
"$PY" -m pip install --disable-pip-version-check -q -c "$work/constraints.txt" \
    -e '.[test,demo,bench]'
"$PY" -m pip check
# The core's own bounds, where a test package pulled a newer release of one (joserfc and
# authlib need cryptography>=45.0.1; the core declares 42): installed over it, so the
# suite runs on what the core promises. pip check would now name those test packages.
"$PY" scripts/lowest.py --core >"$work/core.txt"
"$PY" -m pip install --disable-pip-version-check -q --no-deps -r "$work/core.txt"
echo "core at its lowest: $("$PY" -m pip freeze | grep -iE "^($(cut -d= -f1 "$work/core.txt" | paste -sd'|'))==" | tr '\n' ' ')"
# Warnings stay errors, but deprecations: old releases call what today's releases of their
# own dependencies deprecate (Starlette 0.37's TestClient and anyio's BlockingPortal alias,
# matplotlib 3.8 and pyparsing's parseString). The run with today's versions keeps those
# errors too, and that is where authgate's own calls are held to them.
"$PY" -m pytest -q -p no:cacheprovider -W ignore::DeprecationWarning "$@"

#!/usr/bin/env bash
# Installs what the benchmarks use beyond Python, from Debian: the wrk load generator (python
# -m benchmarks.e2e) and redis-server (python -m benchmarks.fleet, via redis-setup.sh).
# Quiet and idempotent: does nothing when both are there.
set -euo pipefail
bash "$(dirname "$0")/redis-setup.sh"
if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    SUDO=(sudo)
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# A fresh machine's package lists may be empty or stale: one update, then the install.
# Output only on failure.
if ! { "${SUDO[@]}" apt-get update -qq &&
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends wrk; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench-setup: could not install wrk" >&2
    exit 1
fi
command -v wrk >/dev/null

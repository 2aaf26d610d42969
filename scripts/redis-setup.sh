#!/usr/bin/env bash
# Installs what the Redis key store tests (tests/test_redis_store.py) run: a real
# redis-server, from Debian. Quiet and idempotent: does nothing when redis-server is there.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
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
        apt-get install -y -qq --no-install-recommends redis-server; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "redis-setup: could not install redis-server" >&2
    exit 1
fi
command -v redis-server >/dev/null

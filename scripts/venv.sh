#!/usr/bin/env bash
# Makes a virtualenv at $1 with the machine's python3. Debian and Ubuntu ship venv apart
# (python3-venv): when it is missing and we may install, it is installed first.
set -euo pipefail
dest=$1
PY=${PYTHON3:-python3}
if ! "$PY" -m venv "$dest" >/dev/null 2>&1; then
    rm -rf "$dest"
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$ver-venv" >/dev/null
    fi
    "$PY" -m venv "$dest"  # fails with Python's own advice if venv is still missing
fi

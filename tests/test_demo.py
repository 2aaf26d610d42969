"""`authgate demo`: the README's first command, started as a user starts it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx2


def test_demo_serves_a_protected_api(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "asgi_auth.cli", "demo", "--port", "0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        lines = []
        for _ in range(40):  # the banner is about 20 lines; bounded read
            line = proc.stdout.readline()
            lines.append(line)
            if "Ctrl-C" in line or not line:
                break
        banner = "".join(lines)
        listening = re.search(r"API on http://127\.0\.0\.1:(\d+),", banner)
        assert listening, banner
        port = int(listening.group(1))
        assert port != 0
        full = re.search(r"read-write key: (\S+)", banner)
        reader = re.search(r"read-only key:\s+(\S+)", banner)
        assert full and reader, banner
        assert f"curl -i http://127.0.0.1:{port}/health" in banner
        assert (tmp_path / "authgate-demo.db").exists()

        base = f"http://127.0.0.1:{port}"
        # The demo listens before it prints the banner: the first request waits for the
        # server to take it, with no polling.
        with httpx2.Client(base_url=base, timeout=30) as client:
            health = client.get("/health")
            assert health.status_code == 200
            assert client.get("/items").status_code == 401
            rw = {"X-API-Key": full.group(1)}
            ro = {"X-API-Key": reader.group(1)}
            assert client.get("/items", headers=rw).status_code == 200
            assert client.get("/me", headers=ro).json()["name"] == "demo-reader"
            denied = client.post("/items", headers=ro, json={"name": "x"})
            assert denied.status_code == 403
            assert 'error="insufficient_scope"' in denied.headers["www-authenticate"]
            created = client.post(
                "/items", headers={"Authorization": f"ApiKey {full.group(1)}"}, json={"name": "y"}
            )
            assert created.status_code == 201
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()

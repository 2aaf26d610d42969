"""The fleet benchmark (`python -m benchmarks.fleet`), run quick against the real
redis-server it starts itself (benchmarks/redis_server.py): every case and probe
measured, every figure a finite number, the server gone afterwards. No timing is asserted."""

from __future__ import annotations

import json
import math
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.fleet import (
    CACHED_MEMORY,
    CACHED_REDIS,
    CACHED_THROTTLE_MEMORY,
    CACHED_THROTTLE_REDIS,
    STORES,
)

ROOT = Path(__file__).resolve().parent.parent

CACHED = {
    (kind, case)
    for kind in ("asgi", "wsgi")
    for case in (
        "bare",
        CACHED_MEMORY,
        CACHED_REDIS,
        CACHED_THROTTLE_MEMORY,
        CACHED_THROTTLE_REDIS,
    )
}
LATENCY = {
    *(("lookup", f"{s}.get") for s in STORES),
    *(("lookup, asyncio", f"{s}.aget") for s in STORES),
    *(
        (kind, case)
        for kind in ("asgi", "wsgi")
        for case in (
            "bare",
            *(f"API key not cached, {s}" for s in STORES),
            "wrong key, 401, no throttle",
            "wrong key, 401 counted, throttle memory://",
            "wrong key, 401 counted, throttle redis://",
            "over the limit, 429, throttle memory://",
            "over the limit, 429, throttle redis://",
        )
    ),
}


def positive(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def finite(x: Any) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("fleet") / "fleet.json"
    proc = run(["-m", "benchmarks.fleet", "--quick", "-v", "--json", str(out)])
    return proc.stdout, proc.stderr, json.loads(out.read_text())


def test_every_case_and_probe_is_measured(quick: tuple[str, str, dict[str, Any]]) -> None:
    _stdout, _stderr, data = quick
    assert {(r["kind"], r["case"]) for r in data["cached"]} == CACHED
    assert {(r["kind"], r["case"]) for r in data["latency"]} == LATENCY
    assert data["settings"]["rounds_run"] >= 3
    assert data["settings"]["latency_rounds_run"] >= 3
    assert data["machine"]["cpu_count"] >= 1
    assert data["redis"]["version"]


def test_every_figure_is_a_finite_number(quick: tuple[str, str, dict[str, Any]]) -> None:
    _stdout, _stderr, data = quick
    for r in data["cached"]:
        assert all(positive(r[k]) for k in ("median_us", "p10_us", "p90_us", "ratio")), r
        assert r["samples_us"] and all(positive(s) for s in r["samples_us"]), r
        # An overhead is a difference: finite, and 0 only for the bare app itself.
        assert finite(r["overhead_us"]), r
    for t in data["latency"]:
        assert all(positive(t[k]) for k in ("p10_us", "p50_us", "p90_us", "p99_us")), t
        assert t["p10_us"] <= t["p50_us"] <= t["p90_us"] <= t["p99_us"], t
        assert t["calls"] >= 3 * data["settings"]["per_round"], t
        assert (t["over_bare_p50_us"] is None) == (
            t["case"] == "bare" or t["kind"].startswith("lookup")
        ), t
    assert len(data["comparisons"]) == 6
    for c in data["comparisons"]:
        assert all(finite(c[k]) for k in ("overhead_ratio", "diff_median_us")), c


def test_the_cached_path_sends_redis_nothing(quick: tuple[str, str, dict[str, Any]]) -> None:
    # Not a timing: the server's own command counters over the cached rounds.
    assert quick[2]["redis"]["commands_during_cached_rounds"] == 0


def test_the_report_and_the_server_is_gone(quick: tuple[str, str, dict[str, Any]]) -> None:
    stdout, stderr, _data = quick
    assert "## Redis (fleet)" in stdout
    assert "Machine: " in stdout and "redis-server" in stdout
    rows = [line for line in stdout.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == len(CACHED) + len(LATENCY) + 2  # and the two header rows
    found = re.search(r"redis-server \S+ on redis://127\.0\.0\.1:(\d+)/0", stderr)
    assert found, stderr
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(found.group(1))), timeout=1.0).close()


def test_included_by_the_main_command(tmp_path: Path) -> None:
    out = tmp_path / "all.json"
    proc = run(
        [
            "-m",
            "benchmarks",
            "--quick",
            "--fleet",
            "--only",
            "asgi/API key, cached",
            "--rounds",
            "2",
            "--iterations",
            "20",
            "--json",
            str(out),
        ]
    )
    assert "## Redis (fleet)" in proc.stdout
    data = json.loads(out.read_text())
    assert {(r["kind"], r["case"]) for r in data["fleet"]["latency"]} == LATENCY

"""The benchmarks run and report every case. No timing is asserted: figures vary by machine."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import ASGIRunner, CaseError, WSGIRunner
from benchmarks.suite import run

ROOT = Path(__file__).resolve().parent.parent

# What the first cut must measure, as (kind, case).
REQUIRED = {
    ("asgi", "bare"),
    ("asgi", "API key, cached"),
    ("asgi", "public path"),
    ("wsgi", "bare"),
    ("wsgi", "API key, cached"),
    ("fastapi", "bare"),
    ("fastapi", "API key, cached"),
    ("flask", "bare"),
    ("flask", "API key, cached"),
    ("floor", "SHA-256 + dict + compare_digest"),
}


def table_rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    rows = {}
    for line in stdout.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == 5 and cells[0] not in ("case", "---"):
            rows[(cells[1], cells[0])] = cells[2:]
    return rows


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks",
            "--quick",
            "--rounds",
            "2",
            "--iterations",
            "50",
            "--json",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout, json.loads(out.read_text())


def test_table_has_every_case_with_positive_figures(quick_run: tuple[str, Any]) -> None:
    stdout, data = quick_run
    assert "| case | kind | µs/request | overhead µs | \N{MULTIPLICATION SIGN} bare |" in stdout
    rows = table_rows(stdout)
    assert rows.keys() >= REQUIRED
    assert {(r["kind"], r["case"]) for r in data["results"]} == rows.keys()
    for (kind, case), (us, over, ratio) in rows.items():
        assert float(us) > 0, (kind, case)
        if kind == "floor":
            assert over == ratio == "—"
        else:
            assert math.isfinite(float(over)), (kind, case)
            assert float(ratio) > 0, (kind, case)


def test_target_line(quick_run: tuple[str, Any]) -> None:
    stdout, _ = quick_run
    line = next(x for x in stdout.splitlines() if "cached API key overhead" in x)
    assert "≤ 3 µs" in line
    assert ": met (" in line or ": NOT met (" in line
    assert "asgi" in line
    assert "wsgi" in line


def test_json_has_every_case_and_the_machine(quick_run: tuple[str, Any]) -> None:
    stdout, data = quick_run
    assert {"python", "platform", "cpu", "cpu_count"} <= data["machine"].keys()
    # Figures are comparable only on one CPU model, so the run names it.
    cpu = data["machine"]["cpu"]
    assert cpu and f"Machine: CPython {data['machine']['python']}, {cpu} (" in stdout
    assert data["settings"]["rounds_run"] == 2
    by = {(r["kind"], r["case"]): r for r in data["results"]}
    assert by.keys() >= REQUIRED
    for key, r in by.items():
        assert r["median_us"] > 0, key
        assert r["rounds"] == 2, key
        assert len(r["samples_us"]) == 2, key
        assert all(s > 0 for s in r["samples_us"]), key
        if r["kind"] == "floor":
            assert r["overhead_us"] is None
            assert r["ratio"] is None
        else:
            assert isinstance(r["overhead_us"], float), key
            assert r["ratio"] > 0, key
    primary = [t for t in data["targets"] if t["primary"]]
    assert len(primary) == 1
    assert primary[0]["limit_us"] == 3.0
    assert set(primary[0]["values_us"]) == {"asgi", "wsgi"}
    assert isinstance(primary[0]["met"], bool)


def test_python_api_selects_cases() -> None:
    report = run(rounds=1, iterations=10, budget_s=1.0, only=["wsgi/api key*"])
    got = {(r.kind, r.case) for r in report.rows}
    assert got == {("wsgi", "bare"), ("wsgi", "API key, cached")}
    assert all(r.median_us > 0 for r in report.rows)


# -- the ASGI runner: driven by hand when it can be, on a loop when it must -------------


async def plain(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def sleeper(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asyncio.sleep(0)
    await plain(scope, receive, send)


async def loop_user(scope: dict[str, Any], receive: Any, send: Any) -> None:
    asyncio.get_running_loop()
    await plain(scope, receive, send)


async def denied(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b""})


SCOPE = {"type": "http", "method": "GET", "path": "/", "headers": []}


@pytest.mark.parametrize(
    ("app", "mode"), [(plain, "direct"), (sleeper, "loop"), (loop_user, "loop")]
)
def test_asgi_runner_picks_its_mode(app: Any, mode: str) -> None:
    runner = ASGIRunner(app, SCOPE)
    try:
        runner.check()
        assert runner.mode == mode
        assert runner(3) > 0
    finally:
        runner.close()


def test_runners_refuse_a_case_that_does_not_succeed() -> None:
    runner = ASGIRunner(denied, SCOPE)
    try:
        with pytest.raises(CaseError, match="401"):
            runner.check()
    finally:
        runner.close()

    def anonymous(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return []

    with pytest.raises(CaseError, match="identity"):
        WSGIRunner(anonymous, {}, identity="api_key").check()

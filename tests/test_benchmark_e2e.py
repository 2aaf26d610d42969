"""The end-to-end benchmark serves real servers on 127.0.0.1 and measures only apps that
answer 200 with the credential and 401 without it. No timing is asserted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from benchmarks import e2e

WRK_REPORT = """\
Running 1s test @ http://127.0.0.1:40000/items
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.31ms  250.11us   6.02ms   91.00%
    Req/Sec    12.01k   402.31    12.50k    80.00%
  Latency Distribution
     50%  812.00us
     75%    1.36ms
     90%    1.52ms
     99%    2.18ms
  11950 requests in 1.00s, 1.57MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 7
Requests/sec:  11949.50
Transfer/sec:      1.57MB
"""


def assert_measured(report: e2e.E2EReport, ids: set[str], load: str) -> None:
    assert {r.app.id for r in report.rows} == ids
    assert report.settings["generator_name"] == load
    data = report.as_dict()
    for row, d in zip(report.rows, data["results"], strict=True):
        assert len(row.loads) == 1, row.app.id
        assert row.rps > 0, row.app.id
        assert row.non_2xx == d["non_2xx"] == d["socket_errors"] == 0, row.app.id
        assert d["checked"]["with_credential"] == 200, row.app.id
        if row.app.bare:
            assert row.ratio is None
            assert "without_credential" not in d["checked"]
        else:
            assert row.ratio is not None
            assert row.ratio > 0
            assert d["checked"]["without_credential"] == 401, row.app.id
    table = report.markdown()
    assert table.count("\n") == len(report.rows) + 1
    assert "| server | app | req/s (median) | \N{MULTIPLICATION SIGN} bare |" in table


def test_python_client_over_uvicorn_and_gunicorn(tmp_path: Path) -> None:
    report = e2e.run_e2e(
        0.3, 1, only=["starlette-pyjwt", "starlette-jwt", "flask-jwt"], load="python", warmup_s=0.1
    )
    ids = {"starlette-bare", "starlette-pyjwt", "starlette-jwt", "flask-bare", "flask-jwt"}
    assert_measured(report, ids, "python")
    assert report.target_met is None  # the pure-ASGI cached JWT was not run
    assert any("PyJWT recipe" in line for line in report.summary())
    assert all(len(r.ratios) == 1 for r in report.rows if not r.app.bare)
    report.write_json(tmp_path / "e2e.json")
    data = json.loads((tmp_path / "e2e.json").read_text())
    assert {r["id"] for r in data["results"]} == ids
    assert data["settings"]["machine"]["cpu_count"] >= 1
    assert data["target"]["met"] is None


def test_wrk_over_uvicorn_and_gunicorn() -> None:
    # wrk comes from `bash scripts/bench-setup.sh`.
    assert shutil.which("wrk"), "wrk is missing: run bash scripts/bench-setup.sh"
    report = e2e.run_e2e(
        0.3, 1, only=["asgi-jwt", "asgi-key", "flask-key"], load="wrk", warmup_s=0.1
    )
    ids = {"asgi-bare", "asgi-jwt", "asgi-key", "flask-bare", "flask-key"}
    assert_measured(report, ids, "wrk")
    assert report.settings["duration_s"] == 1.0  # wrk runs whole seconds
    assert isinstance(report.target_met, bool)
    assert all(r.p50_ms is not None and r.p50_ms > 0 for r in report.rows)
    assert "Target: a cached JWT under uvicorn" in report.summary()[0]


def test_an_app_that_lets_everyone_in_is_refused(tmp_path: Path) -> None:
    # The bare app posing as a protected one: 200 without the credential, so no figure.
    fake = e2e.App(
        "open", "uvicorn", "pure ASGI", "open", "benchmarks.e2e_apps:bare_asgi", "api_key"
    )
    creds = e2e.Credentials()
    env = e2e.server_env(tmp_path / "unused.json")
    with (
        e2e.serving([fake], e2e.ServerSetup.detect(), env) as servers,
        pytest.raises(e2e.E2EError, match="expected 401 without the credential"),
    ):
        e2e.check(servers[0], creds.headers("api_key"))
    assert servers[0].proc.poll() is not None  # stopped on the way out


def test_wrk_report_parsing_and_failures() -> None:
    load = e2e.parse_wrk(WRK_REPORT)
    assert load.rps == 11949.5
    assert load.requests == 11950
    assert load.seconds == 1.0
    assert load.p50_ms == pytest.approx(0.812)
    assert load.non_2xx == 7
    assert load.socket_errors == 3
    assert load.failed == "11950 requests, 7 non-2xx, 3 socket errors"
    clean = WRK_REPORT.replace("read 2", "read 0").replace("timeout 1", "timeout 0")
    clean = clean.replace("  Non-2xx or 3xx responses: 7\n", "")
    assert e2e.parse_wrk(clean).failed is None
    with pytest.raises(e2e.E2EError, match="could not read"):
        e2e.parse_wrk("unable to connect to 127.0.0.1:1 Connection refused")


def test_selection_adds_the_bare_app_of_each_group() -> None:
    assert [a.id for a in e2e.select(["flask-jwt"])] == ["flask-bare", "flask-jwt"]
    assert len(e2e.select(None)) == len(e2e.APPS)
    with pytest.raises(ValueError, match="unknown app ids"):
        e2e.select(["nope"])

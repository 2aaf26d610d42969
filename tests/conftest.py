"""Suite-wide rules: CI must run every test, so a skipped test fails the run."""

from __future__ import annotations

import pytest

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if _skipped and session.exitstatus == 0:
        session.exitstatus = 1
        print(f"\n{len(_skipped)} test(s) skipped; every test must run: {_skipped}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # The router property tests' figures: examples run per router, all without a
    # disagreement (a disagreement fails the test).
    import sys

    routers = sys.modules.get("tests.test_routers")
    report = getattr(routers, "REPORT", None)
    if report:
        terminalreporter.write_sep("-", "path rules against real routers (hypothesis)")
        for name, (examples, protected) in report.items():
            terminalreporter.write_line(
                f"{name}: {examples} examples, {protected} reached a protected handler "
                "with its scopes, 0 disagreements"
            )

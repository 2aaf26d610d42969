"""One benchmark run, as a Python API: `run(...)` returns a `Report`."""

from __future__ import annotations

import fnmatch
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

from . import jwt_cases, oauth_cases, peer_cases  # noqa: F401  (register their groups and targets)
from .cases import TARGETS, Fixture, TargetResult, build
from .harness import ASGIRunner, Case, Result, machine, markdown, measure, noise, results

# Defaults: a micro case runs `iterations` requests per round; see harness.MICRO & co.
# Many short rounds: this kind of machine changes speed from one second to the next, and
# a short round sees one speed for all its cases.
FULL = {"rounds": 500, "iterations": 2_000, "budget_s": 40.0}
QUICK = {"rounds": 100, "iterations": 1_000, "budget_s": 5.0}


@dataclass
class Report:
    rows: list[Result]
    targets: list[TargetResult]
    settings: dict[str, Any]

    def markdown(self) -> str:
        return markdown(self.rows)

    def summary(self) -> list[str]:
        return [t.line() for t in self.targets]

    def noise(self) -> list[str]:
        return noise(self.rows)

    @property
    def primary_met(self) -> bool:
        return all(t.met for t in self.targets if t.target.primary)

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": machine(),
            "settings": self.settings,
            "results": [r.as_dict() for r in self.rows],
            "targets": [t.as_dict() for t in self.targets],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")


def selector(patterns: list[str]) -> Callable[[Case], bool] | None:
    """Cases whose "kind/case" label matches one of the shell-style patterns."""
    if not patterns:
        return None
    lowered = [p.lower() for p in patterns]
    return lambda c: any(fnmatch.fnmatch(c.label.lower(), p) for p in lowered)


def run(
    *,
    rounds: int,
    iterations: int,
    budget_s: float | None,
    only: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Build every case (or those `only` selects: shell patterns over "kind/case"), check
    each answers 200 with the expected identity, then measure. `budget_s=None`: no limit."""
    if rounds < 1 or iterations < 1:
        raise ValueError("rounds and iterations must be at least 1")
    started = perf_counter()
    fx = Fixture()
    cases: list[Case] = []
    try:
        cases = build(fx, selector(only or []))
        if not cases:
            raise ValueError(f"no case matches {only}")
        built = perf_counter()
        done = measure(
            cases,
            rounds=rounds,
            iterations=iterations,
            budget_s=math.inf if budget_s is None else budget_s,
            progress=progress,
        )
        rows = results(cases, iterations)
    finally:
        for c in cases:
            if isinstance(c.runner, ASGIRunner):
                c.runner.close()
        fx.close()
    evaluated = [t.evaluate(rows) for t in TARGETS]
    settings = {
        "rounds": rounds,
        "rounds_run": done,
        "iterations": iterations,
        "budget_s": budget_s,
        "setup_s": round(built - started, 2),
        "elapsed_s": round(perf_counter() - started, 2),
        "only": only or [],
    }
    return Report(rows, [t for t in evaluated if t is not None], settings)

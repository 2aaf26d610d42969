"""Timing: interleaved rounds, medians, overhead against the bare app of the same kind.

This machine is noisy, so only figures from the same run are compared: every round runs
every case once (in rotating order), and each case's result is the median over rounds.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

Runner = Callable[[int], float]  # runs n requests, returns elapsed seconds


@dataclass
class Case:
    name: str
    kind: str  # what it is compared with: the case named "bare" of the same kind
    run: Runner
    note: str = ""
    samples: list[float] = field(default_factory=list)  # µs per request, one per round

    @property
    def median(self) -> float:
        return statistics.median(self.samples)


def asgi_runner(app: Any, scope: dict[str, Any]) -> Runner:
    """Run `app` n times inside one event loop; each call gets a fresh copy of the scope."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    async def batch(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await app(dict(scope), receive, send)
        return time.perf_counter() - t0

    loop = asyncio.new_event_loop()

    def run(n: int) -> float:
        return loop.run_until_complete(batch(n))

    return run


def wsgi_runner(app: Any, environ: dict[str, Any]) -> Runner:
    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[..., Any]:
        return lambda data: None

    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return time.perf_counter() - t0

    return run


def call_runner(fn: Callable[[], Any]) -> Runner:
    def run(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0

    return run


def awaitable_runner(fn: Callable[[], Awaitable[Any]]) -> Runner:
    loop = asyncio.new_event_loop()

    async def batch(n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await fn()
        return time.perf_counter() - t0

    return lambda n: loop.run_until_complete(batch(n))


def measure(cases: list[Case], *, rounds: int, iterations: int, budget_s: float) -> None:
    """Interleave `rounds` rounds; stop early (with at least 3 rounds) past `budget_s`."""
    for case in cases:  # warm caches and code paths
        case.run(max(1, iterations // 10))
    started = time.perf_counter()
    for r in range(rounds):
        order = cases[r % len(cases) :] + cases[: r % len(cases)]
        for case in order:
            n = max(1, iterations // 20) if "first-seen" in case.name else iterations
            gc.collect()
            gc.disable()
            try:
                elapsed = case.run(n)
            finally:
                gc.enable()
            case.samples.append(elapsed / n * 1e6)
        if r >= 2 and time.perf_counter() - started > budget_s:
            break


def results(cases: list[Case]) -> list[dict[str, Any]]:
    bare = {c.kind: c.median for c in cases if c.name == "bare"}
    out = []
    for c in cases:
        base = bare.get(c.kind)
        row: dict[str, Any] = {
            "case": c.name,
            "kind": c.kind,
            "us_per_request": round(c.median, 3),
            "rounds": len(c.samples),
            "note": c.note,
        }
        if base is not None and c.name != "bare":
            row["overhead_us"] = round(c.median - base, 3)
            row["ratio"] = round(c.median / base, 3)
        out.append(row)
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| case | kind | µs/request | overhead µs | × bare |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        over = f"{r['overhead_us']:.2f}" if "overhead_us" in r else ""
        ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
        name = r["case"] + (f" ({r['note']})" if r["note"] else "")
        lines.append(f"| {name} | {r['kind']} | {r['us_per_request']:.2f} | {over} | {ratio} |")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def write_json(path: str, rows: list[dict[str, Any]], extra: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump({"machine": machine(), "results": rows, **extra}, f, indent=2)


__all__ = ["Case", "asdict"]

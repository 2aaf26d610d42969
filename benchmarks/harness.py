"""Timing: runners that call apps directly, interleaved rounds, medians, overheads.

The machines this runs on are noisy, so only figures from the same run are compared:
every round runs every case (in an order that rotates from round to round) with the
garbage collector off, and a case's figure is its median over rounds. A case's overhead
is measured against the case named "bare" of the same kind.
"""

from __future__ import annotations

import asyncio
import gc
import os
import platform
import statistics
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from time import perf_counter, perf_counter_ns
from typing import Any

Message = dict[str, Any]
ASGICallable = Callable[[dict[str, Any], Any, Any], Coroutine[Any, Any, None]]
WSGICallable = Callable[[dict[str, Any], Any], Iterable[bytes]]

BARE = "bare"


class CaseError(RuntimeError):
    """A case does not do what it claims (wrong status, no identity, app suspended)."""


# -- runners ----------------------------------------------------------------------------


class Runner:
    """Runs `n` requests and returns the elapsed nanoseconds.

    `check()` runs one request outside the timing and validates it; the harness calls it
    before any timing, so a misconfigured case (a 401 measured as a success) fails loudly.
    """

    mode = "call"

    def __call__(self, n: int) -> int:
        raise NotImplementedError

    def check(self) -> None:
        """Validate one request. The default checks nothing."""


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(message: Message) -> None:
    return None


def _identity_method(holder: dict[str, Any], key: str) -> str | None:
    ident = holder.get(key)
    return None if ident is None else str(ident.method)


class ASGIRunner(Runner):
    """Calls an ASGI app directly: no server, no sockets.

    Apps that never really wait for I/O finish on the first `coro.send(None)`, so a
    coroutine awaiting the app `n` times is driven by hand with one `send(None)`, and no
    event-loop cost is measured ("direct" mode). An app that truly suspends (or asks for
    the running loop) is detected by `check()` and run on an asyncio loop instead ("loop"
    mode); `align_modes` then puts every ASGI case of that kind on the loop too, so a
    pair is always measured the same way.

    Each request gets a fresh shallow copy of the scope template (the middleware writes
    `scope["auth"]`/`scope["user"]`, routers write more); the bare app pays for the copy
    too, so it cancels out of the overhead.

    The template's header names are the same `bytes` objects every time, so their hashes
    are computed once and cached, where a server parses new ones for every request. With
    `fresh_header_names`, every request gets new name objects (made inside the timing,
    so the bare twin must use it too): the realistic cost of looking headers up.
    """

    def __init__(
        self,
        app: ASGICallable,
        scope: dict[str, Any],
        *,
        identity: str | None = None,
        fresh_header_names: bool = False,
    ) -> None:
        self.app = app
        self.scope = scope
        self.identity = identity  # the expected scope["auth"].method, if any
        self.fresh_header_names = fresh_header_names
        self.mode = "direct"
        self._loop: asyncio.AbstractEventLoop | None = None

    def __call__(self, n: int) -> int:
        batch = self._batch(n)
        if self._loop is not None:
            return self._loop.run_until_complete(batch)
        # Direct: one send(None) runs the whole batch; the awaits inside never suspend.
        try:
            batch.send(None)
        except StopIteration as done:
            elapsed: int = done.value
            return elapsed
        batch.close()
        raise CaseError("the app suspended in direct mode (check() decides the mode)")

    async def _batch(self, n: int) -> int:
        app, copy = self.app, self.scope.copy
        if self.fresh_header_names:
            names = [bytearray(name) for name, _ in self.scope["headers"]]
            values = [value for _, value in self.scope["headers"]]
            t0 = perf_counter_ns()
            for _ in range(n):
                scope = copy()
                scope["headers"] = [*zip(map(bytes, names), values, strict=True)]
                await app(scope, _receive, _send)
            return perf_counter_ns() - t0
        t0 = perf_counter_ns()
        for _ in range(n):
            await app(copy(), _receive, _send)
        return perf_counter_ns() - t0

    def use_loop(self) -> None:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self.mode = "loop"

    def close(self) -> None:
        if self._loop is not None:
            self._loop.close()

    def check(self) -> None:
        if self._loop is None:
            try:
                self._check(direct=True)
                return
            except (_NeedsLoop, CaseError):
                # Suspended, asked for the running loop, or failed without one (a driver
                # that needs the loop reports a 503): the loop decides.
                self.use_loop()
        self._check(direct=False)

    def _check(self, *, direct: bool) -> None:
        sent: list[Message] = []

        async def send(message: Message) -> None:
            sent.append(message)

        scope = self.scope.copy()
        if direct:
            coro = self.app(scope, _receive, send)
            try:
                coro.send(None)
            except StopIteration:
                pass
            except RuntimeError as exc:  # "no running event loop" and kin (sniffio, anyio)
                raise _NeedsLoop from exc
            else:  # it awaited something real
                coro.close()
                raise _NeedsLoop
        else:
            assert self._loop is not None
            self._loop.run_until_complete(self.app(scope, _receive, send))
        starts = [m for m in sent if m["type"] == "http.response.start"]
        if len(starts) != 1 or starts[0]["status"] != 200:
            status = [m.get("status") for m in starts]
            raise CaseError(f"expected one 200 response, got {status}")
        if self.identity is None:
            return  # a peer's scope["auth"] is its own type (Starlette's AuthCredentials)
        got = _identity_method(scope, "auth")
        if got != self.identity:
            raise CaseError(f"expected scope['auth'].method == {self.identity!r}, got {got!r}")


class _NeedsLoop(Exception):
    pass


def _start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], Any]:
    return _write


def _write(data: bytes) -> None:
    return None


class WSGIRunner(Runner):
    """Calls a WSGI app directly with a fresh shallow copy of the environ template, and
    consumes and closes the iterable it returns (PEP 3333), as a server would."""

    mode = "direct"

    def __init__(
        self, app: WSGICallable, environ: dict[str, Any], *, identity: str | None = None
    ) -> None:
        self.app = app
        self.environ = environ
        self.identity = identity  # the expected environ["wsgi_auth.identity"].method

    def __call__(self, n: int) -> int:
        app, copy, start_response = self.app, self.environ.copy, _start_response
        t0 = perf_counter_ns()
        for _ in range(n):
            body = app(copy(), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return perf_counter_ns() - t0

    def check(self) -> None:
        statuses: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            statuses.append(status)
            return _write

        env = self.environ.copy()
        body = self.app(env, start_response)
        b"".join(body)
        close = getattr(body, "close", None)
        if close is not None:
            close()
        if statuses != ["200 OK"]:
            raise CaseError(f"expected 200 OK, got {statuses}")
        got = _identity_method(env, "wsgi_auth.identity")
        if self.identity is not None and got != self.identity:
            raise CaseError(f"expected the identity method {self.identity!r}, got {got!r}")


class CallRunner(Runner):
    """Calls `fn()` n times: for floors (a hash, a signature check, a library call)."""

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn

    def __call__(self, n: int) -> int:
        fn = self.fn
        t0 = perf_counter_ns()
        for _ in range(n):
            fn()
        return perf_counter_ns() - t0

    def check(self) -> None:
        self.fn()


# -- cases and measurement --------------------------------------------------------------

# Iteration weights: `--iterations N` is what a micro case runs per round; heavier cases
# run a fraction of it so that every case costs a comparable share of the run.
MICRO = 1.0
FRAMEWORK = 0.05
CRYPTO = 0.01


@dataclass
class Case:
    """One measured thing. `kind` names what it is compared with: the case named "bare"
    of the same kind (a kind without one, like "floor", has no overhead)."""

    name: str
    kind: str
    runner: Runner
    weight: float = MICRO
    note: str = ""
    samples: list[float] = field(default_factory=list)  # µs per request, one per round

    def iterations(self, base: int) -> int:
        return max(1, round(base * self.weight))

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


def lead_in(n: int) -> int:
    """Untimed requests a case runs before each timed batch of `n` in a round."""
    return max(2, n // 10)


def align_modes(cases: Sequence[Case]) -> None:
    """Put every ASGI case of a kind on the event loop if one of them needs it."""
    looped = {c.kind for c in cases if c.runner.mode == "loop"}
    for c in cases:
        if c.kind in looped and isinstance(c.runner, ASGIRunner) and c.runner.mode != "loop":
            c.runner.use_loop()
            c.runner.check()


def measure(
    cases: Sequence[Case],
    *,
    rounds: int,
    iterations: int,
    budget_s: float,
    progress: Callable[[str], None] | None = None,
) -> int:
    """Check every case, warm it up, then run interleaved rounds, each case's timed batch
    after a few untimed requests of its own. Stops early once past
    `budget_s` seconds of rounds (after at least 3, or `rounds` if fewer). Returns the
    number of rounds run; each case's `samples` holds one µs/request figure per round."""
    for case in cases:
        try:
            case.runner.check()
        except CaseError as exc:
            raise CaseError(f"{case.label}: {exc}") from None
    align_modes(cases)
    for case in cases:
        case.runner(max(1, case.iterations(iterations) // 5))
    # Everything made so far stays: freezing it makes the collection between rounds cheap
    # (a full collection of the imported frameworks costs tens of milliseconds).
    gc.collect()
    gc.freeze()
    started = perf_counter()
    done = 0
    try:
        for r in range(rounds):
            shift = r % len(cases)
            order = [*cases[shift:], *cases[:shift]]
            gc.collect()
            gc.disable()
            try:
                for case in order:
                    n = case.iterations(iterations)
                    # Untimed first: a case must not pay for the code that ran before it.
                    # Without this, a kind's first case in a short batch (a framework's
                    # bare app, 100 requests) absorbed the CPU caches' refill, and cases
                    # after it looked cheaper than the bare app.
                    case.runner(lead_in(n))
                    case.samples.append(case.runner(n) / n / 1000.0)
            finally:
                gc.enable()
            done += 1
            elapsed = perf_counter() - started
            if progress is not None and (done % 10 == 0 or done == rounds):
                progress(f"round {done}/{rounds}: {elapsed:.1f} s")
            if done >= min(3, rounds) and elapsed > budget_s:
                break
    finally:
        gc.unfreeze()
        gc.collect()
    return done


@dataclass(frozen=True)
class Result:
    """A case's figures. Overhead and ratio pair each round's sample with the bare
    sample of the same round (median over rounds of the difference and of the ratio):
    cases in one short round see the same machine speed, so its drift cancels."""

    case: str
    kind: str
    median_us: float
    overhead_us: float | None  # median over rounds of (case - bare of the same kind)
    ratio: float | None  # median over rounds of (case / bare)
    median_diff_us: float | None  # median(case) - median(bare), for comparison
    p10_us: float
    p90_us: float
    iterations: int
    mode: str
    note: str
    samples_us: tuple[float, ...]

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "case": self.case,
            "kind": self.kind,
            "median_us": r(self.median_us),
            "overhead_us": r(self.overhead_us),
            "ratio": r(self.ratio),
            "median_diff_us": r(self.median_diff_us),
            "p10_us": r(self.p10_us),
            "p90_us": r(self.p90_us),
            "rounds": len(self.samples_us),
            "iterations_per_round": self.iterations,
            "mode": self.mode,
            "note": self.note,
            "samples_us": [round(x, 4) for x in self.samples_us],
        }


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def results(cases: Sequence[Case], base_iterations: int) -> list[Result]:
    bare = {c.kind: c for c in cases if c.name == BARE}
    out = []
    for c in cases:
        med = statistics.median(c.samples)
        base = bare.get(c.kind)
        over = ratio = diff = None
        if base is not None:
            pairs = list(zip(c.samples, base.samples, strict=True))
            over = statistics.median(a - b for a, b in pairs)
            ratio = statistics.median(a / b for a, b in pairs)
            diff = med - statistics.median(base.samples)
        out.append(
            Result(
                case=c.name,
                kind=c.kind,
                median_us=med,
                overhead_us=over,
                ratio=ratio,
                median_diff_us=diff,
                p10_us=_quantile(c.samples, 0.1),
                p90_us=_quantile(c.samples, 0.9),
                iterations=c.iterations(base_iterations),
                mode=c.runner.mode,
                note=c.note,
                samples_us=tuple(c.samples),
            )
        )
    return out


def markdown(rows: Sequence[Result]) -> str:
    lines = [
        "| case | kind | µs/request | overhead µs | × bare |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        over = "—" if r.overhead_us is None else f"{r.overhead_us:+.2f}"
        ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
        name = r.case + (f" ({r.note})" if r.note else "")
        lines.append(f"| {name} | {r.kind} | {r.median_us:.2f} | {over} | {ratio} |")
    return "\n".join(lines)


def noise(rows: Sequence[Result]) -> list[str]:
    """How much the machine's speed moved during the run, seen on the bare cases."""
    return [
        f"{r.kind} bare p10–p90 {r.p10_us:.2f}–{r.p90_us:.2f} µs (×{r.p90_us / r.p10_us:.1f})"
        for r in rows
        if r.case == BARE
    ]


def cpu_model() -> str:
    """The CPU's model name, with family and model numbers (a VM may show only a generic
    name), or "" where the OS does not say. Figures are comparable only on one CPU: the
    same code has met and missed a target on two CPUs of one VM kind."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                name = name.strip()
                if not name:
                    break  # the first processor is enough
                fields.setdefault(name, value.strip())
    except OSError:
        return platform.processor()
    model = fields.get("model name", "")
    if "cpu family" in fields and "model" in fields:
        model += f" (family {fields['cpu family']}, model {fields['model']})"
    return model


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
    }

"""`python -m benchmarks.fleet`: authgate with Redis, what a fleet pays (issue 14, item 9).

Starts its own `redis-server` (Debian's binary, `benchmarks/redis_server.py`) on
127.0.0.1, a free port, no persistence, and stops it at the end. Three parts, one run:

1. **Cached path**: a cached API key under ASGI and WSGI with `RedisKeyStore` against
   `MemoryKeyStore`, and with a throttle configured (memory:// and Redis) against none,
   in the interleaved rounds of `benchmarks/harness.py`: µs/request over the bare app.
   The Redis server's command counters are read before and after: the cached rounds must
   send it nothing.
2. **Uncached lookup**: one key-store lookup (`get`, and `aget` on an event loop) for
   Memory, SQLite and Redis (over loopback), and a request whose key is not cached
   (`APIKeyAuth(store, cache_ttl=0)`) through each middleware; per-call latencies, p50,
   p90 and p99.
3. **Throttle**: `Throttle("5/minute", per="address")` on memory:// and on Redis: a
   failed credential that is counted (401, one storage write), a request refused with 429
   (its address over the limit), each beside the same 401 without a throttle. Client
   addresses come from a counter, so every count is known in advance.

Parts 2 and 3 time every call alone (perf_counter_ns around it) in interleaved rounds:
every probe runs in every round, in an order rotating from round to round. Every loop is
bounded in count and in time (`--budget`).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import itertools
import json
import math
import statistics
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import Any

from asgi_auth import APIKeyAuth, AuthMiddleware
from asgi_auth.keys import MemoryKeyStore, SQLiteKeyStore
from asgi_auth.keys.base import KeyStore
from asgi_auth.keys.format import assemble, new_secret, parse
from wsgi_auth import AuthMiddleware as WSGIAuthMiddleware

from . import apps
from .harness import (
    BARE,
    ASGIRunner,
    Case,
    CaseError,
    Result,
    WSGIRunner,
    machine,
    measure,
    results,
)
from .redis_server import RedisServer

Progress = Callable[[str], None] | None

LIMIT = "5/minute"
LIMIT_COUNT = 5  # failures the limit allows per address and window

# Case names of the cached part (kinds "asgi" and "wsgi").
CACHED_MEMORY = "API key cached, MemoryKeyStore"
CACHED_REDIS = "API key cached, RedisKeyStore"
CACHED_THROTTLE_MEMORY = "API key cached, MemoryKeyStore, throttle memory://"
CACHED_THROTTLE_REDIS = "API key cached, MemoryKeyStore, throttle redis://"

STORES = ("MemoryKeyStore", "SQLiteKeyStore", "RedisKeyStore")


@dataclass(frozen=True)
class FleetConfig:
    """Sizes of a run. The cached part: `rounds` interleaved rounds of `iterations`
    requests per case, stopped after `budget_s` s (min. 3 rounds). The latency part:
    `latency_rounds` rounds of `per_round` timed calls per probe, stopped after
    `latency_budget_s` s (min. 3 rounds)."""

    rounds: int
    iterations: int
    budget_s: float
    latency_rounds: int
    per_round: int
    latency_budget_s: float


FULL = FleetConfig(
    rounds=300,
    iterations=2_000,
    budget_s=25.0,
    latency_rounds=300,
    per_round=40,
    latency_budget_s=30.0,
)
QUICK = FleetConfig(
    rounds=20,
    iterations=200,
    budget_s=2.0,
    latency_rounds=10,
    per_round=10,
    latency_budget_s=2.0,
)


# -- latency probes ---------------------------------------------------------------------


@dataclass
class Probe:
    """One thing timed call by call: `call()` (sync) or `acall()` (on the run's event
    loop) returns a status (an HTTP status, or 0 for a store lookup) that must equal
    `expect`. `prepare`, when given, runs untimed before the probe's calls in each round."""

    name: str
    kind: str
    call: Callable[[], int] | None = None
    acall: Callable[[], Awaitable[int]] | None = None
    expect: int = 200
    note: str = ""
    prepare: Callable[[], None] | None = None
    samples_ns: list[int] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.kind}/{self.name}"


class Sampler:
    """Runs probes: each call timed alone, the status checked after the timing."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def run(self, probe: Probe, n: int, record: bool) -> None:
        if probe.acall is not None:
            times, statuses = self.loop.run_until_complete(_atimed(probe.acall, n))
        else:
            assert probe.call is not None
            times, statuses = _timed(probe.call, n)
        bad = [s for s in statuses if s != probe.expect]
        if bad:
            raise CaseError(f"{probe.label}: expected {probe.expect}, got {bad[:5]}")
        if record:
            probe.samples_ns.extend(times)


def _timed(fn: Callable[[], int], n: int) -> tuple[list[int], list[int]]:
    times, statuses = [], []
    clock = perf_counter_ns
    for _ in range(n):
        t0 = clock()
        status = fn()
        times.append(clock() - t0)
        statuses.append(status)
    return times, statuses


async def _atimed(fn: Callable[[], Awaitable[int]], n: int) -> tuple[list[int], list[int]]:
    times, statuses = [], []
    clock = perf_counter_ns
    for _ in range(n):
        t0 = clock()
        status = await fn()
        times.append(clock() - t0)
        statuses.append(status)
    return times, statuses


def sample(
    probes: Sequence[Probe],
    sampler: Sampler,
    *,
    rounds: int,
    per_round: int,
    budget_s: float,
    progress: Progress = None,
) -> int:
    """Check each probe, warm it up, then run interleaved rounds (the order rotates; the
    collector is off within a round). Stops after `rounds` or once past `budget_s`
    seconds (after at least 3 rounds). Returns the number of rounds run."""
    for p in probes:
        if p.prepare is not None:
            p.prepare()
        sampler.run(p, 1, record=False)
    for p in probes:
        sampler.run(p, max(2, per_round // 2), record=False)
    started = perf_counter()
    done = 0
    for r in range(rounds):
        shift = r % len(probes)
        order = [*probes[shift:], *probes[:shift]]
        gc.collect()
        gc.disable()
        try:
            for p in order:
                if p.prepare is not None:
                    p.prepare()
                sampler.run(p, 2, record=False)  # untimed lead-in
                sampler.run(p, per_round, record=True)
        finally:
            gc.enable()
        done += 1
        elapsed = perf_counter() - started
        if progress is not None and (done % 20 == 0 or done == rounds):
            progress(f"latency round {done}/{rounds}: {elapsed:.1f} s")
        if done >= min(3, rounds) and elapsed > budget_s:
            break
    return done


@dataclass(frozen=True)
class Latency:
    """A probe's figures in µs: quantiles over every timed call of the run, and the
    difference of its p50 from the p50 of the bare probe of its kind."""

    case: str
    kind: str
    p10_us: float
    p50_us: float
    p90_us: float
    p99_us: float
    over_bare_p50_us: float | None
    calls: int
    note: str

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 3)

        return {
            "case": self.case,
            "kind": self.kind,
            "p10_us": r(self.p10_us),
            "p50_us": r(self.p50_us),
            "p90_us": r(self.p90_us),
            "p99_us": r(self.p99_us),
            "over_bare_p50_us": r(self.over_bare_p50_us),
            "calls": self.calls,
            "note": self.note,
        }


def _q(ordered: Sequence[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000.0


def latencies(probes: Sequence[Probe]) -> list[Latency]:
    bare = {p.kind: _q(sorted(p.samples_ns), 0.5) for p in probes if p.name == BARE}
    out = []
    for p in probes:
        s = sorted(p.samples_ns)
        p50 = _q(s, 0.5)
        base = bare.get(p.kind)
        out.append(
            Latency(
                case=p.name,
                kind=p.kind,
                p10_us=_q(s, 0.1),
                p50_us=p50,
                p90_us=_q(s, 0.9),
                p99_us=_q(s, 0.99),
                over_bare_p50_us=None if base is None or p.name == BARE else p50 - base,
                calls=len(s),
                note=p.note,
            )
        )
    return out


# -- requests ---------------------------------------------------------------------------


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class Addresses:
    """Distinct client addresses (10.x.y.z) from a counter: each one fresh, so every
    throttle count is known in advance."""

    def __init__(self) -> None:
        self._n = itertools.count(1)

    def __call__(self) -> str:
        i = next(self._n)
        return f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}"


class ASGIRequest:
    """One request to an ASGI app, from `address()` when given; returns the status."""

    def __init__(self, app: Any, key: str | None, address: Callable[[], str] | None = None) -> None:
        self.app = app
        self.scope = apps.http_scope("/items", [(b"x-api-key", key.encode())] if key else [])
        self.address = address

    async def __call__(self) -> int:
        scope = self.scope.copy()
        if self.address is not None:
            scope["client"] = (self.address(), 50000)
        status = 0

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, _receive, send)
        return status


class WSGIRequest:
    """One request to a WSGI app, from `address()` when given; returns the status."""

    def __init__(self, app: Any, key: str | None, address: Callable[[], str] | None = None) -> None:
        self.app = app
        self.environ = apps.environ("/items", **({"X_API_KEY": key} if key else {}))
        self.address = address

    def __call__(self) -> int:
        env = self.environ.copy()
        if self.address is not None:
            env["REMOTE_ADDR"] = self.address()
        status = ""

        def start_response(s: str, headers: Any, exc_info: Any = None) -> Any:
            nonlocal status
            status = s
            return None

        body = self.app(env, start_response)
        for _chunk in body:
            pass
        close = getattr(body, "close", None)
        if close is not None:
            close()
        return int(status[:3])


def wrong_secret(key: str) -> str:
    """The key with another (well-formed) secret: it parses, its id exists, it fails."""
    prefix, key_id, _secret = parse(key)
    return assemble(prefix, key_id, new_secret())


# -- the run ----------------------------------------------------------------------------


@dataclass
class FleetReport:
    cached: list[Result]
    latency: list[Latency]
    settings: dict[str, Any]
    redis: dict[str, Any]

    def _row(self, kind: str, case: str) -> Result:
        return next(r for r in self.cached if r.kind == kind and r.case == case)

    def _lat(self, kind: str, case: str) -> Latency:
        return next(r for r in self.latency if r.kind == kind and r.case == case)

    def comparisons(self) -> list[dict[str, Any]]:
        """Per kind: Redis against memory on the cached path, and a throttle against none;
        per-round differences (median, p10-p90) and the ratio of the median overheads."""
        out = []
        pairs = [
            ("RedisKeyStore vs MemoryKeyStore", CACHED_REDIS, CACHED_MEMORY),
            ("throttle memory:// vs none", CACHED_THROTTLE_MEMORY, CACHED_MEMORY),
            ("throttle redis:// vs none", CACHED_THROTTLE_REDIS, CACHED_MEMORY),
        ]
        for kind in ("asgi", "wsgi"):
            for what, a, b in pairs:
                ra, rb = self._row(kind, a), self._row(kind, b)
                diffs = sorted(x - y for x, y in zip(ra.samples_us, rb.samples_us, strict=True))
                assert ra.overhead_us is not None
                assert rb.overhead_us is not None
                out.append(
                    {
                        "kind": kind,
                        "comparison": what,
                        "overhead_us": [round(ra.overhead_us, 4), round(rb.overhead_us, 4)],
                        "overhead_ratio": round(ra.overhead_us / rb.overhead_us, 4),
                        "diff_median_us": round(statistics.median(diffs), 4),
                        "diff_p10_us": round(diffs[int(0.1 * len(diffs))], 4),
                        "diff_p90_us": round(diffs[min(len(diffs) - 1, int(0.9 * len(diffs)))], 4),
                    }
                )
        return out

    def markdown(self) -> str:
        lines = [
            "### Cached path (interleaved rounds)",
            "",
            "| case | kind | µs/request | p10–p90 | overhead µs | × bare |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in self.cached:
            over = "—" if r.overhead_us is None else f"{r.overhead_us:+.2f}"
            ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
            lines.append(
                f"| {r.case} | {r.kind} | {r.median_us:.2f} | {r.p10_us:.2f}–{r.p90_us:.2f} "
                f"| {over} | {ratio} |"
            )
        lines += [
            "",
            "### Lookups, misses and throttled failures (each call timed alone)",
            "",
            "| case | kind | p50 µs | p10–p90 | p99 µs | p50 over bare µs | calls |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for t in self.latency:
            over = "—" if t.over_bare_p50_us is None else f"{t.over_bare_p50_us:+.1f}"
            name = t.case + (f" ({t.note})" if t.note else "")
            lines.append(
                f"| {name} | {t.kind} | {t.p50_us:.1f} | {t.p10_us:.1f}–{t.p90_us:.1f} "
                f"| {t.p99_us:.1f} | {over} | {t.calls} |"
            )
        return "\n".join(lines)

    def summary(self) -> list[str]:
        out = []
        for c in self.comparisons():
            out.append(
                f"{c['kind']}, cached, {c['comparison']}: overhead {c['overhead_us'][0]:+.2f} "
                f"against {c['overhead_us'][1]:+.2f} µs (ratio {c['overhead_ratio']:.2f}); "
                f"per-round difference {c['diff_median_us']:+.2f} µs "
                f"(p10–p90 {c['diff_p10_us']:+.2f}…{c['diff_p90_us']:+.2f})."
            )
        sent = self.redis["commands_during_cached_rounds"]
        out.append(f"Redis commands received during the cached rounds: {sent}.")
        for kind in ("asgi", "wsgi"):
            miss = {s: self._lat(kind, f"API key not cached, {s}") for s in STORES}
            out.append(
                f"{kind}, one miss (p50 over bare): "
                + ", ".join(f"{s} {m.over_bare_p50_us:+.1f} µs" for s, m in miss.items())
                + f"; Redis p99 {miss['RedisKeyStore'].p99_us:.1f} µs."
            )
            base = self._lat(kind, "wrong key, 401, no throttle")
            for storage in ("memory://", "redis://"):
                counted = self._lat(kind, f"wrong key, 401 counted, throttle {storage}")
                refused = self._lat(kind, f"over the limit, 429, throttle {storage}")
                out.append(
                    f"{kind}, throttle {storage}: a counted failure costs "
                    f"{counted.p50_us - base.p50_us:+.1f} µs (p50) over the same 401 without "
                    f"a throttle, p99 {counted.p99_us:.1f} µs; a 429 takes {refused.p50_us:.1f} "
                    f"µs (p50), p99 {refused.p99_us:.1f} µs."
                )
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": machine(),
            "settings": self.settings,
            "redis": self.redis,
            "cached": [r.as_dict() for r in self.cached],
            "comparisons": self.comparisons(),
            "latency": [t.as_dict() for t in self.latency],
        }


def _command_calls(client: Any) -> int:
    """Commands the server has run, INFO itself left out."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if not k.endswith("info"))


class _Fleet:
    """What one run builds: the server, the stores, the apps; `close()` undoes it."""

    def __init__(self, workdir: Path, progress: Progress) -> None:
        self.progress = progress
        self.server = RedisServer(workdir)
        self.server.start()
        try:
            self._build(workdir)
        except BaseException:
            self.server.stop()
            raise

    def _build(self, workdir: Path) -> None:
        import redis

        from asgi_auth.keys import RedisKeyStore

        self.url = self.server.url
        self.loop = asyncio.new_event_loop()
        self.memory = MemoryKeyStore()
        self.sqlite = SQLiteKeyStore(workdir / "keys.db")
        self.redis = RedisKeyStore(self.url, namespace="bench")
        self.admin = redis.Redis.from_url(self.url)  # INFO, outside what is measured
        self.stores: dict[str, KeyStore] = {
            "MemoryKeyStore": self.memory,
            "SQLiteKeyStore": self.sqlite,
            "RedisKeyStore": self.redis,
        }
        self.keys = {
            name: store.create("bench", ["items:read"]).key for name, store in self.stores.items()
        }
        self.key_ids = {name: parse(key)[1] for name, key in self.keys.items()}
        self.addresses = Addresses()

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.redis.aclose())
            self.loop.run_until_complete(self.loop.shutdown_default_executor())
            self.loop.close()
            self.redis.close()
            self.admin.close()
            self.sqlite.close()
        finally:
            self.server.stop()

    # -- part 1 -------------------------------------------------------------------------

    def throttle(self, storage: str) -> Any:
        from asgi_auth.throttle import Throttle

        return Throttle(
            LIMIT, storage=self.url if storage == "redis://" else storage, per="address"
        )

    def cached_cases(self) -> list[Case]:
        variants: list[tuple[str, str, dict[str, Any]]] = [
            (CACHED_MEMORY, "MemoryKeyStore", {}),
            (CACHED_REDIS, "RedisKeyStore", {}),
            (CACHED_THROTTLE_MEMORY, "MemoryKeyStore", {"throttle": "memory://"}),
            (CACHED_THROTTLE_REDIS, "MemoryKeyStore", {"throttle": "redis://"}),
        ]
        cases = [
            Case(BARE, "asgi", ASGIRunner(apps.bare_asgi, apps.http_scope())),
            Case(BARE, "wsgi", WSGIRunner(apps.bare_wsgi, apps.environ())),
        ]
        for name, store, options in variants:
            key = self.keys[store]
            for kind in ("asgi", "wsgi"):
                opts = {k: self.throttle(v) for k, v in options.items()}
                # A TTL longer than any run: every timed request is a cache hit.
                auth = APIKeyAuth(self.stores[store], cache_ttl=3600.0)
                # One WSGI request (the sync driver, no event loop) puts the key in the
                # authenticator's cache, so the ASGI runner's check runs without a loop.
                warm = WSGIAuthMiddleware(apps.bare_wsgi, authenticators=[auth], **opts)
                WSGIRunner(warm, apps.environ(X_API_KEY=key), identity="api_key").check()
                runner: ASGIRunner | WSGIRunner
                if kind == "asgi":
                    mw = AuthMiddleware(apps.bare_asgi, authenticators=[auth], **opts)
                    scope = apps.http_scope("/items", [(b"x-api-key", key.encode())])
                    runner = ASGIRunner(mw, scope, identity="api_key")
                else:
                    wmw = WSGIAuthMiddleware(apps.bare_wsgi, authenticators=[auth], **opts)
                    runner = WSGIRunner(wmw, apps.environ(X_API_KEY=key), identity="api_key")
                cases.append(Case(name, kind, runner))
        kinds = {"asgi": 0, "wsgi": 1}
        cases.sort(key=lambda c: kinds[c.kind])
        return cases

    # -- parts 2 and 3 ------------------------------------------------------------------

    def probes(self) -> list[Probe]:
        probes: list[Probe] = []
        for name, store in self.stores.items():
            key_id = self.key_ids[name]
            get, aget = store.get, store.aget

            def call(get: Callable[[str], Any] = get, key_id: str = key_id) -> int:
                return 0 if get(key_id) is not None else -1

            async def acall(aget: Callable[[str], Any] = aget, key_id: str = key_id) -> int:
                return 0 if await aget(key_id) is not None else -1

            probes.append(Probe(f"{name}.get", "lookup", call=call, expect=0))
            probes.append(Probe(f"{name}.aget", "lookup, asyncio", acall=acall, expect=0))
        for kind in ("asgi", "wsgi"):
            probes += self._request_probes(kind)
        return probes

    def _request_probes(self, kind: str) -> list[Probe]:
        def make(
            name: str,
            app: Any,
            key: str | None,
            *,
            expect: int = 200,
            address: Callable[[], str] | None = None,
            note: str = "",
            prepare: Callable[[], None] | None = None,
        ) -> Probe:
            if kind == "asgi":
                return Probe(
                    name,
                    kind,
                    acall=ASGIRequest(app, key, address),
                    expect=expect,
                    note=note,
                    prepare=prepare,
                )
            return Probe(
                name,
                kind,
                call=WSGIRequest(app, key, address),
                expect=expect,
                note=note,
                prepare=prepare,
            )

        def wrap(auth: APIKeyAuth, **options: Any) -> Any:
            if kind == "asgi":
                return AuthMiddleware(apps.bare_asgi, authenticators=[auth], **options)
            return WSGIAuthMiddleware(apps.bare_wsgi, authenticators=[auth], **options)

        bare = apps.bare_asgi if kind == "asgi" else apps.bare_wsgi
        # The bare app gets a fresh address per request too: it pays for the counter.
        out = [make(BARE, bare, None, address=self.addresses)]
        for name, store in self.stores.items():
            # cache_ttl=0: every request looks its key up in the store.
            auth = APIKeyAuth(store, cache_ttl=0.0)
            out.append(make(f"API key not cached, {name}", wrap(auth), self.keys[name]))
        # The throttle's part: a MemoryKeyStore, so the storage is its only I/O.
        wrong = wrong_secret(self.keys["MemoryKeyStore"])
        out.append(
            make(
                "wrong key, 401, no throttle",
                wrap(APIKeyAuth(self.memory)),
                wrong,
                expect=401,
                address=self.addresses,
            )
        )
        for storage in ("memory://", "redis://"):
            counted = wrap(APIKeyAuth(self.memory), throttle=self.throttle(storage))
            out.append(
                make(
                    f"wrong key, 401 counted, throttle {storage}",
                    counted,
                    wrong,
                    expect=401,
                    address=self.addresses,
                    note="a fresh address each",
                )
            )
            refusing = wrap(APIKeyAuth(self.memory), throttle=self.throttle(storage))
            probe = make(
                f"over the limit, 429, throttle {storage}",
                refusing,
                wrong,
                expect=429,
                address=None,
                note=f"one address per round, {LIMIT_COUNT} failures before",
            )
            probe.prepare = self._saturator(kind, refusing, wrong, probe)
            out.append(probe)
        return out

    def _saturator(self, kind: str, app: Any, wrong: str, probe: Probe) -> Callable[[], None]:
        """Before each round: a fresh address fails `LIMIT_COUNT` times (401 each), and the
        probe's requests then come from it (429 each)."""

        def prepare() -> None:
            address = self.addresses()
            request: ASGIRequest | WSGIRequest
            if kind == "asgi":
                request = ASGIRequest(app, wrong, lambda: address)
                statuses = [self.loop.run_until_complete(request()) for _ in range(LIMIT_COUNT)]
                assert isinstance(probe.acall, ASGIRequest)
                probe.acall.scope["client"] = (address, 50000)
            else:
                wrequest = WSGIRequest(app, wrong, lambda: address)
                statuses = [wrequest() for _ in range(LIMIT_COUNT)]
                assert isinstance(probe.call, WSGIRequest)
                probe.call.environ["REMOTE_ADDR"] = address
            if statuses != [401] * LIMIT_COUNT:
                raise CaseError(f"{probe.label}: saturating an address gave {statuses}")

        return prepare


def run_fleet(
    quick: bool = False,
    *,
    config: FleetConfig | None = None,
    progress: Progress = None,
) -> FleetReport:
    """Start a redis-server, build every case and probe, check each, measure, stop it."""
    cfg = config or (QUICK if quick else FULL)
    started = perf_counter()
    with tempfile.TemporaryDirectory(prefix="authgate-fleet-") as tmp:
        fleet = _Fleet(Path(tmp), progress)
        cases: list[Case] = []
        try:
            version = fleet.admin.info("server")["redis_version"]
            if progress is not None:
                progress(f"redis-server {version} on {fleet.url}")
            cases = fleet.cached_cases()
            before = _command_calls(fleet.admin)
            rounds_run = measure(
                cases,
                rounds=cfg.rounds,
                iterations=cfg.iterations,
                budget_s=cfg.budget_s,
                progress=progress,
            )
            sent = _command_calls(fleet.admin) - before
            cached = results(cases, cfg.iterations)
            probes = fleet.probes()
            latency_rounds = sample(
                probes,
                Sampler(fleet.loop),
                rounds=cfg.latency_rounds,
                per_round=cfg.per_round,
                budget_s=cfg.latency_budget_s,
                progress=progress,
            )
            lat = latencies(probes)
        finally:
            for c in cases:
                if isinstance(c.runner, ASGIRunner):
                    c.runner.close()
            fleet.close()
    settings = {
        "quick": quick,
        **cfg.__dict__,
        "rounds_run": rounds_run,
        "latency_rounds_run": latency_rounds,
        "limit": LIMIT,
        "elapsed_s": round(perf_counter() - started, 2),
    }
    redis_info = {
        "version": version,
        "server": "127.0.0.1, a free port, --save '' --appendonly no",
        "commands_during_cached_rounds": sent,
    }
    return FleetReport(cached, lat, settings, redis_info)


def describe(report: FleetReport) -> Iterable[str]:
    """The lines printed after the tables: comparisons, settings, machine."""
    yield from report.summary()
    s = report.settings
    yield (
        f"\nCached: {len(report.cached)} cases, {s['rounds_run']} interleaved rounds of "
        f"{s['iterations']} requests; µs/request: median over rounds, p10–p90 over rounds; "
        "overhead and × bare: median over rounds of the difference and ratio to the bare app "
        "of the same kind in the same round."
    )
    yield (
        f"Latency: {s['latency_rounds_run']} interleaved rounds of {s['per_round']} calls "
        "per probe, each call timed alone; quantiles over every call. Throttle: "
        f"Throttle({LIMIT!r}, per='address'); the keys of the throttle rows are in a "
        "MemoryKeyStore, so the throttle's storage is their only I/O."
    )
    m = machine()
    yield (
        f"Machine: {m['implementation']} {m['python']}, {m['cpu'] or m['machine']} "
        f"({m['cpu_count']} CPUs), {m['platform']}; redis-server {report.redis['version']} "
        f"on 127.0.0.1 (loopback), no persistence. {s['elapsed_s']:.1f} s in all."
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fleet", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    p.add_argument("--budget", type=float, help="seconds for each of the two parts' rounds")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    if args.budget is not None:
        if not (math.isfinite(args.budget) and args.budget > 0):
            p.error("--budget must be a positive number of seconds")
        cfg = dataclasses.replace(cfg, budget_s=args.budget, latency_budget_s=args.budget)
    progress = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    report = run_fleet(args.quick, config=cfg, progress=progress)
    print("## Redis (fleet)\n\n" + report.markdown() + "\n")
    for line in describe(report):
        print(line)
    if args.json:
        Path(args.json).write_text(
            json.dumps(report.as_dict(), indent=2, ensure_ascii=False) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

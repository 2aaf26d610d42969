"""`python -m benchmarks.scale`: what authgate costs as the numbers grow, and what it keeps.

1. µs per request, in-process through `AuthMiddleware` around the bare ASGI app, against
   - the number of API keys in the store (`MemoryKeyStore` and `SQLiteKeyStore`), with
     the requesting key cached, and uncached (`cache_ttl=0`: every request looks the key
     up and checks its HMAC), over a pool of keys spread across the store;
   - the number of `JWTAuth` issuers in one middleware (tokens routed by `iss`): cached
     tokens (a pool inside the gate's 4096-entry credential memo, and one past it) and
     first-seen ES256 tokens;
   - the share of first-seen ES256 tokens in the stream (0, 10, 100 %).
   Every variant runs in the same interleaved rounds as a bare twin of its kind (see
   `harness.measure`); figures are medians over rounds.
2. Memory: RSS growth in a fresh process after N distinct invalid and valid tokens of
   each kind, with default cache sizes (see `scale_memory`); the target is 64 MiB.

Before any timing every pooled credential is sent once and must get a 200 with the
expected identity; after it, the caches must show what the variant claims (every pooled
key still cached, no entry at all for `cache_ttl=0`, every first-seen token consumed
verified and cached), so a 401 measured as a success fails the run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from time import perf_counter, perf_counter_ns
from typing import Any

from asgi_auth import APIKeyAuth, AuthMiddleware, JWTAuth
from asgi_auth.authenticator import RequestInfo
from asgi_auth.flow import SyncDriver
from asgi_auth.http import HTTP
from asgi_auth.keys import SQLiteKeyStore

from . import apps
from .harness import (
    ASGIRunner,
    CallRunner,
    Case,
    CaseError,
    Result,
    lead_in,
    machine,
    measure,
    noise,
    results,
)
from .harness import _receive as receive
from .harness import _send as send
from .scale_keys import key_batch, memory_stores, sqlite_file
from .scale_memory import LIMIT_MIB, MIB, PHASES, MemoryResult, rss, run_phases
from .scale_tokens import Issuer

SEED = 20_240_601
KEYS = "api keys"
JWT = "jwt"


@dataclass(frozen=True)
class ScaleConfig:
    """What one run measures and for how long."""

    key_counts: tuple[int, ...] = (10, 10_000, 1_000_000)
    issuer_counts: tuple[int, ...] = (1, 10, 100)
    shares: tuple[float, ...] = (0.0, 0.1, 1.0)
    pool: int = 1_000  # distinct credentials a cycled variant sends (keys, cached JWTs)
    wide_pool: int = 8_192  # cached JWTs past the gate's 4096-entry credential memo
    rounds: int = 200
    iterations: int = 2_000  # requests per round of a cached (micro) variant
    budget_s: float = 40.0
    tokens: int = 1_000_000  # per memory phase
    timing: bool = True
    memory: bool = True
    jobs: int = 2  # memory phases run at once (each is one process)
    phase_deadline_s: float = 600.0
    cache_entries: int | None = None  # the memory phases' cache sizes; None: the defaults


FULL = ScaleConfig()
QUICK = ScaleConfig(
    key_counts=(10, 10_000),
    wide_pool=5_000,
    rounds=40,
    iterations=1_000,
    budget_s=8.0,
    tokens=20_000,
)

# Weights (fractions of `iterations` per round) chosen so that each variant takes a
# comparable few milliseconds per round.
UNCACHED_WEIGHT = 0.1
FIRST_SEEN_WEIGHT = 0.02


def share_weight(share: float) -> float:
    return 1.0 / (1.0 + 50.0 * share)


def wide_weight(issuers: int) -> float:
    # Past the gate's memo, routing peeks at the payload once per issuer tried.
    return 2.0 / (1.0 + issuers)


# -- runners ----------------------------------------------------------------------------


class StreamRunner(ASGIRunner):
    """Calls the app with a list of scope templates, one after another (each request a
    fresh shallow copy, as `ASGIRunner` does).

    `once=False` cycles through the list (a pool of credentials); `once=True` uses each
    scope once (a stream of first-seen tokens) and fails rather than reuse one. The
    bare twin of a kind uses the same runner, so the indexing cancels out.
    """

    def __init__(
        self,
        app: Any,
        scopes: Sequence[dict[str, Any]],
        *,
        identity: str | None,
        once: bool = False,
    ) -> None:
        if not scopes:
            raise ValueError("no scopes")
        super().__init__(app, scopes[0], identity=identity)
        self.scopes = list(scopes)
        self.once = once
        # check() sends scopes[0]; a stream of first-seen tokens starts after it.
        self.pos = 1 if once else 0

    async def _batch(self, n: int) -> int:
        app, scopes, size, start = self.app, self.scopes, len(self.scopes), self.pos
        if self.once and start + n > size:
            raise CaseError(f"stream of {size} first-seen tokens exhausted")
        self.pos = start + n
        t0 = perf_counter_ns()
        for i in range(start, start + n):
            await app(scopes[i % size].copy(), receive, send)
        return perf_counter_ns() - t0

    def consumed(self) -> list[dict[str, Any]]:
        """The scopes sent so far (each once, for a `once` stream)."""
        return self.scopes[: self.pos] if self.once else self.scopes


def run_pool(app: Any, scopes: Sequence[dict[str, Any]], method: str) -> None:
    """Send every scope once, outside any timing; each must answer 200 as `method`."""
    loop = asyncio.new_event_loop()
    try:
        for template in scopes:
            sent: list[dict[str, Any]] = []

            async def record(message: dict[str, Any], sent: list[dict[str, Any]] = sent) -> None:
                sent.append(message)

            scope = template.copy()
            loop.run_until_complete(app(scope, receive, record))
            status = [m["status"] for m in sent if m["type"] == "http.response.start"]
            ident = scope.get("auth")
            if status != [200] or ident is None or ident.method != method:
                got = None if ident is None else ident.method
                raise CaseError(f"expected 200 as {method}, got {status} as {got}")
    finally:
        loop.close()


@dataclass
class Variant:
    """A case, what to do before timing (fill caches, check every credential), and
    what must hold after it; both return a line for the report or raise `CaseError`."""

    case: Case
    before: Callable[[], str] = lambda: ""
    after: Callable[[], str] = lambda: ""
    checked: list[str] = field(default_factory=list)


def _bare(kind: str) -> Variant:
    runner = StreamRunner(apps.bare_asgi, [apps.http_scope()], identity=None)
    return Variant(Case("bare", kind, runner))


def _scope(name: bytes, value: str) -> dict[str, Any]:
    return apps.http_scope(headers=[(name, value.encode())])


def _bearer(token: str) -> dict[str, Any]:
    return _scope(b"authorization", f"Bearer {token}")


# -- 1a: API keys against the store's size ----------------------------------------------


@dataclass
class KeyFixture:
    """The stores of every size (built once per run), and the SQLite files in `workdir`."""

    files: dict[int, Path]
    build_s: float
    variants: list[Variant]
    floors: list[Variant]
    sqlite: list[SQLiteKeyStore]

    def close(self) -> None:
        for store in self.sqlite:
            store.close()


def key_variants(cfg: ScaleConfig, workdir: Path, seed: int) -> KeyFixture:
    t0 = perf_counter()
    batch = key_batch(seed, cfg.key_counts, cfg.pool)
    memory = memory_stores(batch)
    files: dict[int, Path] = {}
    for n in cfg.key_counts:
        files[n] = workdir / f"keys-{n}.db"
        sqlite_file(files[n], batch, n)
    samples = batch.samples
    del batch  # ids and hashes of every key: the stores have them now
    build_s = perf_counter() - t0

    variants = [_bare(KEYS)]
    floors: list[Variant] = []
    opened: list[SQLiteKeyStore] = []
    for n in cfg.key_counts:
        opened.append(SQLiteKeyStore(files[n], hash_key=memory[n].hash_key))
        stores: list[tuple[str, Any]] = [
            ("MemoryKeyStore", memory[n]),
            ("SQLiteKeyStore", opened[-1]),
        ]
        for label, store in stores:
            sample = samples[n]
            scopes = [_scope(b"x-api-key", k) for k in sample]
            cached = APIKeyAuth(store, cache_ttl=3600.0)
            uncached = APIKeyAuth(store, cache_ttl=0.0)
            for auth, name, weight in (
                (cached, f"{label}, {n:,} keys, cached", 1.0),
                (uncached, f"{label}, {n:,} keys, uncached", UNCACHED_WEIGHT),
            ):
                app = AuthMiddleware(apps.bare_asgi, authenticators=[auth])
                runner = StreamRunner(app, scopes, identity="api_key")
                variants.append(
                    Variant(
                        Case(name, KEYS, runner, weight),
                        before=_pool_check(app, scopes, "api_key"),
                        after=(
                            _still_cached(auth, sample) if auth is cached else _never_cached(auth)
                        ),
                    )
                )
            floors.append(_sync_lookup(f"{label}, {n:,} keys, uncached", store, sample))
    return KeyFixture(files, build_s, variants, floors, opened)


def _sync_lookup(name: str, store: Any, sample: list[str]) -> Variant:
    """The uncached check without the event loop: the flow run by the sync driver
    (as under WSGI), so the store lookup and the HMAC show apart from asyncio."""
    auth = APIKeyAuth(store, cache_ttl=0.0)
    driver = SyncDriver()
    info = RequestInfo("GET", "/items", "http", "127.0.0.1")
    keys = itertools.cycle(sample).__next__

    def lookup() -> object:
        return driver.run(auth.flow(keys(), info))

    return Variant(
        Case(f"{name}, sync flow", "floor", CallRunner(lookup), UNCACHED_WEIGHT),
        after=_never_cached(auth),
    )


def _pool_check(app: Any, scopes: list[dict[str, Any]], method: str) -> Callable[[], str]:
    def check() -> str:
        run_pool(app, scopes, method)
        return f"{len(scopes)}/{len(scopes)} pooled credentials 200 as {method}"

    return check


def _still_cached(auth: APIKeyAuth | JWTAuth, tokens: Sequence[str]) -> Callable[[], str]:
    def check() -> str:
        missing = sum(1 for t in tokens if auth.cached(t) is None)
        if missing:
            raise CaseError(f"{missing} of {len(tokens)} pooled credentials left the cache")
        return f"all {len(tokens)} still cached after the run"

    return check


def _never_cached(auth: APIKeyAuth) -> Callable[[], str]:
    def check() -> str:
        sizes = len(auth._hits), len(auth._records)
        if sizes != (0, 0):
            raise CaseError(f"cache_ttl=0 cached something: {sizes}")
        return "no cache entry after the run: every request read the store"

    return check


# -- 1b and 1c: JWT issuers and the share of first-seen tokens --------------------------


def _stream_len(cfg: ScaleConfig, weight: float) -> int:
    """Requests a `once` stream may need: every round with its untimed lead-in, the
    warm-up and the check."""
    n = max(1, round(cfg.iterations * weight))
    return cfg.rounds * (n + lead_in(n)) + max(1, n // 5) + 2


def _all_verified(
    runner: StreamRunner, owners: dict[str, JWTAuth], fresh: set[str]
) -> Callable[[], str]:
    """After the run: every first-seen token sent is in its issuer's cache, which only
    verified tokens enter (the caches are sized to hold them all)."""

    def check() -> str:
        sent = {_token_of(s) for s in runner.consumed()} & fresh
        bad = sum(1 for t in sent if t not in owners[t]._hits)
        if bad:
            raise CaseError(f"{bad} of {len(sent)} first-seen tokens were not verified")
        return f"all {len(sent)} first-seen tokens sent were verified"

    return check


def _token_of(scope: dict[str, Any]) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return str(value.decode().removeprefix("Bearer "))
    raise CaseError("no Authorization header")


def _round_robin(issuers: list[Issuer], start: int, size: int) -> list[tuple[Issuer, str]]:
    """`size` distinct tokens, taking turns over the issuers as many clients would."""
    return [
        (issuers[i % len(issuers)], issuers[i % len(issuers)].token(i))
        for i in range(start, start + size)
    ]


def _issuers(count: int) -> str:
    return f"{count} issuer" + ("s" if count != 1 else "")


def issuer_variants(cfg: ScaleConfig, http: HTTP) -> list[Variant]:
    variants: list[Variant] = []
    for count in cfg.issuer_counts:
        issuers = [Issuer(f"https://idp{j}.scale.example") for j in range(count)]
        start = 0
        pools = (("cached", cfg.pool), (f"cached, {cfg.wide_pool:,} tokens", cfg.wide_pool))
        for (label, size), weight in zip(pools, (1.0, wide_weight(count)), strict=True):
            tokens = _round_robin(issuers, start, size)
            start += size
            auths = {iss.issuer: iss.auth(http=http) for iss in issuers}
            app = AuthMiddleware(apps.bare_asgi, authenticators=list(auths.values()))
            scopes = [_bearer(t) for _, t in tokens]
            runner = StreamRunner(app, scopes, identity="jwt")
            variants.append(
                Variant(
                    Case(f"{_issuers(count)}, {label}", JWT, runner, weight),
                    before=_pool_check(app, scopes, "jwt"),
                    after=_jwt_still_cached({t: auths[iss.issuer] for iss, t in tokens}),
                )
            )
        length = _stream_len(cfg, FIRST_SEEN_WEIGHT)
        tokens = _round_robin(issuers, start, length)
        # Caches big enough for the whole stream: the check after the run finds every
        # token sent in its issuer's cache.
        auths = {iss.issuer: iss.auth(max_cache_entries=length + 1, http=http) for iss in issuers}
        app = AuthMiddleware(apps.bare_asgi, authenticators=list(auths.values()))
        runner = StreamRunner(app, [_bearer(t) for _, t in tokens], identity="jwt", once=True)
        owners = {t: auths[iss.issuer] for iss, t in tokens}
        variants.append(
            Variant(
                Case(f"{_issuers(count)}, first-seen", JWT, runner, FIRST_SEEN_WEIGHT),
                after=_all_verified(runner, owners, set(owners)),
            )
        )
    return variants


def _jwt_still_cached(owners: dict[str, JWTAuth]) -> Callable[[], str]:
    def check() -> str:
        missing = sum(1 for t, auth in owners.items() if auth.cached(t) is None)
        if missing:
            raise CaseError(f"{missing} of {len(owners)} pooled tokens left the cache")
        return f"all {len(owners)} still cached after the run"

    return check


def share_variants(cfg: ScaleConfig, http: HTTP) -> list[Variant]:
    issuer = Issuer("https://idp.share.scale.example")
    pool = [issuer.token(i) for i in range(cfg.pool)]
    pooled = [_bearer(t) for t in pool]
    serial = cfg.pool
    variants: list[Variant] = []
    for share in cfg.shares:
        weight = share_weight(share)
        length = _stream_len(cfg, weight) if share > 0 else len(pool)
        fresh: list[str] = []
        scopes: list[dict[str, Any]] = []
        for i in range(length):
            # Evenly spread: request i is first-seen when the running share steps up.
            if math.floor((i + 1) * share) > math.floor(i * share):
                fresh.append(issuer.token(serial))
                serial += 1
                scopes.append(_bearer(fresh[-1]))
            else:
                scopes.append(pooled[i % len(pooled)])
        auth = issuer.auth(max_cache_entries=len(pool) + len(fresh) + 1, http=http)
        app = AuthMiddleware(apps.bare_asgi, authenticators=[auth])
        runner = StreamRunner(app, scopes, identity="jwt", once=share > 0)
        checks = [_jwt_still_cached(dict.fromkeys(pool, auth))]
        if fresh:
            checks.append(_all_verified(runner, dict.fromkeys(fresh, auth), set(fresh)))
        variants.append(
            Variant(
                Case(f"{share:.0%} first-seen", JWT, runner, weight),
                before=_pool_check(app, pooled, "jwt"),
                after=_joined(checks),
            )
        )
    return variants


def _joined(checks: list[Callable[[], str]]) -> Callable[[], str]:
    return lambda: "; ".join(check() for check in checks)


@dataclass
class SetupCost:
    """What making `count` default `JWTAuth` instances (one per issuer) costs."""

    count: int
    seconds: float
    rss_growth: int

    def line(self) -> str:
        return (
            f"{_issuers(self.count)}: {self.seconds * 1000:.0f} ms, "
            f"RSS {self.rss_growth / MIB:+.1f} MiB"
        )


def issuer_setup(counts: Sequence[int]) -> list[SetupCost]:
    """Construct `count` `JWTAuth` with static keys and default options, as an app with
    that many issuers does at start-up; time it and read RSS before and after."""
    out = []
    for count in counts:
        issuers = [Issuer(f"https://setup{j}.scale.example") for j in range(count)]
        gc.collect()
        before = rss()[0]
        t0 = perf_counter()
        auths = [iss.auth() for iss in issuers]
        seconds = perf_counter() - t0
        gc.collect()
        out.append(SetupCost(count, seconds, rss()[0] - before))
        del auths
    return out


# -- the run ----------------------------------------------------------------------------


@dataclass
class ScaleReport:
    rows: list[Result]
    checks: dict[str, list[str]]  # "kind/case" -> what was verified
    memory: list[MemoryResult]
    settings: dict[str, Any]
    setup: list[SetupCost] = field(default_factory=list)

    def markdown(self) -> str:
        lines = []
        if self.rows:
            lines += [
                "| case | kind | µs/request | overhead µs | × bare |",
                "| --- | --- | ---: | ---: | ---: |",
            ]
        for r in self.rows:
            over = "—" if r.overhead_us is None else f"{r.overhead_us:+.2f}"
            ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
            lines.append(f"| {r.case} | {r.kind} | {r.median_us:.2f} | {over} | {ratio} |")
        if self.memory:
            lines += [
                *([""] if lines else []),
                "| memory phase | tokens | answers | RSS start MiB | RSS end MiB | growth MiB "
                "| peak MiB | live blocks Δ | µs/request | s |",
                "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
            ]
            for m in self.memory:
                answers = ", ".join(f"{n:,}× {s}" for s, n in sorted(m.statuses.items()))
                lines.append(
                    f"| {m.phase} | {m.completed:,} | {answers or m.error} "
                    f"| {m.rss_start / MIB:.1f} | {m.rss_end / MIB:.1f} "
                    f"| {m.growth / MIB:+.1f} | {m.rss_peak / MIB:.1f} "
                    f"| {m.blocks_end - m.blocks_start:+,} "
                    f"| {m.app_s / max(1, m.completed) * 1e6:.1f} | {m.total_s:.0f} |"
                )
        return "\n".join(lines)

    def summary(self) -> list[str]:
        out = []
        for m in self.memory:
            verdict = "met" if m.within_limit else "NOT met"
            full = [f"{b.name} {b.size:,}/{b.bound:,}" for b in m.caches if b.size]
            over = [b.name for b in m.caches if not b.within]
            out.append(
                f"Target: RSS growth ≤ {LIMIT_MIB:g} MiB after {m.completed:,} {m.phase} "
                f"tokens: {verdict} ({m.growth / MIB:+.1f} MiB); caches: "
                + (", ".join(full) or "all empty")
                + (f"; OVER BOUND: {', '.join(over)}" if over else "")
                + (f"; error: {m.error}" if m.error else "")
            )
        return out

    def curves(self) -> list[str]:
        """RSS along each memory phase (flat once the caches are full, if bounded)."""
        return [
            f"{m.phase}: "
            + " → ".join(f"{n // 1000}k {rss / MIB:.0f}" for n, rss in m.checkpoints)
            + " MiB"
            for m in self.memory
        ]

    def noise(self) -> list[str]:
        return noise(self.rows)

    @property
    def memory_met(self) -> bool:
        """Every memory phase within the RSS limit, and every cache within its bound."""
        return all(m.within_limit and all(b.within for b in m.caches) for m in self.memory)

    def as_dict(self) -> dict[str, Any]:
        return {
            "machine": machine(),
            "settings": self.settings,
            "results": [
                {**r.as_dict(), "checked": self.checks.get(f"{r.kind}/{r.case}", [])}
                for r in self.rows
            ],
            "memory": [m.as_dict() for m in self.memory],
            "issuer_setup": [asdict(c) for c in self.setup],
            "memory_limit_mib": LIMIT_MIB,
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")


@dataclass
class _Timing:
    rows: list[Result]
    checks: dict[str, list[str]]
    setup: list[SetupCost]
    files: dict[int, Path]  # the SQLite stores built, by size
    stats: dict[str, Any]


def _timing(cfg: ScaleConfig, workdir: Path, say: Callable[[str], None]) -> _Timing:
    started = perf_counter()
    say("constructing default JWTAuth instances")
    setup = issuer_setup(cfg.issuer_counts)
    say("building key stores")
    keys = key_variants(cfg, workdir, SEED)
    say(f"key stores built in {keys.build_s:.1f} s; minting tokens")
    # One HTTP client for every JWTAuth of the timed variants: each default one makes
    # its own TLS context (see `issuer_setup`), which would only slow the setup.
    http = HTTP()
    variants = [
        *keys.variants,
        _bare(JWT),
        *issuer_variants(cfg, http),
        *share_variants(cfg, http),
        *keys.floors,
    ]
    for v in variants:
        line = v.before()
        if line:
            v.checked.append(line)
    built = perf_counter()
    say(f"setup {built - started:.1f} s; measuring {len(variants)} cases")
    cases = [v.case for v in variants]
    try:
        done = measure(
            cases,
            rounds=cfg.rounds,
            iterations=cfg.iterations,
            budget_s=cfg.budget_s,
            progress=say,
        )
        for v in variants:
            line = v.after()
            if line:
                v.checked.append(line)
        rows = results(cases, cfg.iterations)
    finally:
        for c in cases:
            if isinstance(c.runner, ASGIRunner):
                c.runner.close()
        keys.close()
    stats = {
        "rounds_run": done,
        "setup_s": round(built - started, 2),
        "keys_build_s": round(keys.build_s, 2),
        "measure_s": round(perf_counter() - built, 2),
    }
    checks = {v.case.label: v.checked for v in variants}
    return _Timing(rows, checks, setup, keys.files, stats)


def run_scale(
    quick: bool = False,
    *,
    tokens: int | None = None,
    config: ScaleConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScaleReport:
    """Build every variant, check it, measure the interleaved rounds, check again, then
    run the memory phases. `config` overrides the preset that `quick` picks."""
    cfg = config or (QUICK if quick else FULL)
    if tokens is not None:
        cfg = replace(cfg, tokens=tokens)
    if cfg.rounds < 1 or cfg.iterations < 1 or cfg.tokens < 1:
        raise ValueError("rounds, iterations and tokens must be at least 1")
    say = progress or (lambda _line: None)
    started = perf_counter()
    with tempfile.TemporaryDirectory(prefix="authgate-scale-") as tmp:
        workdir = Path(tmp)
        timing = _timing(cfg, workdir, say) if cfg.timing else _Timing([], {}, [], {}, {})
        memory: list[MemoryResult] = []
        if cfg.memory:
            db = timing.files.get(cfg.tokens)
            if db is None:
                say(f"building a store of {cfg.tokens:,} keys for the memory phases")
                db = workdir / f"keys-{cfg.tokens}.db"
                sqlite_file(db, key_batch(SEED, [cfg.tokens], 1), cfg.tokens)
            memory = run_phases(
                PHASES,
                cfg.tokens,
                db,
                SEED,
                jobs=cfg.jobs,
                deadline_s=cfg.phase_deadline_s,
                cache_entries=cfg.cache_entries,
                progress=say,
            )
    settings = {
        **asdict(cfg),
        "quick": quick,
        **timing.stats,
        "elapsed_s": round(perf_counter() - started, 2),
        "memory_tokens_jwt": "HS256, static secret",
    }
    return ScaleReport(timing.rows, timing.checks, memory, settings, timing.setup)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=__doc__)
    p.add_argument("--quick", action="store_true", help="10/10k keys, 20k tokens: under a minute")
    p.add_argument("--tokens", type=int, help="tokens per memory phase (default 1M, quick 20k)")
    p.add_argument("--no-memory", action="store_true", help="timing only")
    p.add_argument("--no-timing", action="store_true", help="memory only")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a memory phase grows past the limit or a cache past its bound",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    cfg = replace(cfg, memory=not args.no_memory, timing=not args.no_timing)
    report = run_scale(
        args.quick,
        tokens=args.tokens,
        config=cfg,
        progress=(lambda line: print(line, file=sys.stderr)) if args.verbose else None,
    )
    print(report.markdown())
    print()
    for line in report.summary():
        print(line)
    if report.memory:
        print("\nRSS along each phase: " + "; ".join(report.curves()) + ".")
    s = report.settings
    if report.rows:
        print(
            "Constructing default JWTAuth (static keys): "
            + "; ".join(c.line() for c in report.setup)
            + "."
        )
        print(
            f"\n{len(report.rows)} cases, {s['rounds_run']} interleaved rounds, setup "
            f"{s['setup_s']:.0f} s, {s['elapsed_s']:.0f} s in all on {os.cpu_count()} "
            "CPUs. µs/request: median over rounds; overhead and × bare: median over rounds "
            "of the difference and ratio to the bare app of the same kind in the same round."
        )
        print("Machine speed during the run: " + "; ".join(report.noise()) + ".")
    else:
        print(f"\n{s['elapsed_s']:.0f} s in all on {os.cpu_count()} CPUs.")
    if args.json:
        report.write_json(args.json)
    return 1 if args.check and not report.memory_met else 0


if __name__ == "__main__":
    sys.exit(main())

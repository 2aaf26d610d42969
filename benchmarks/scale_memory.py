"""Memory under a flood of distinct credentials: RSS before and after, in a fresh process.

Each phase runs in its own interpreter (`python -m benchmarks.scale_memory --phase ...`)
so that nothing made by the timing benchmarks or by an earlier phase is counted. The
middleware has both authenticators with their default cache sizes: `JWTAuth` (HS256
with a static secret: the cheapest signature, so a million tokens mint and verify in
well under a minute) and `APIKeyAuth` over a SQLite store built by `scale_keys`.

After imports and a warm-up the child reads its RSS, sends the tokens through the
middleware (minted in chunks outside the timed part, never all held at once), collects
the garbage and reads RSS again. It also reports every bounded structure of the request
path with its size and bound, and `sys.getallocatedblocks()` (live Python objects; RSS
also keeps freed arenas, so the two together tell growth from allocator retention).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path
from time import perf_counter
from typing import Any

from asgi_auth import APIKeyAuth, AuthMiddleware, JWTAuth
from asgi_auth import gate as gate_module
from asgi_auth import rules as rules_module
from asgi_auth.keys import SQLiteKeyStore
from asgi_auth.keys.format import DEFAULT_PREFIX, assemble

from . import apps
from .scale_keys import hash_key, key_parts, plaintexts
from .scale_tokens import Issuer

PHASES = ("jwt invalid", "api key invalid", "jwt valid", "api key valid")
ISSUER = "https://idp.scale.example"
LIMIT_MIB = 64.0
MIB = 1024 * 1024
CHUNK = 10_000  # tokens minted per chunk, outside the timed part
ROOT = Path(__file__).resolve().parent.parent


def rss() -> tuple[int, int]:
    """`(VmRSS, VmHWM)` in bytes, from /proc; `resource`'s peak for both elsewhere."""
    try:
        fields = dict(
            line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
        )
        return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return peak, peak


@dataclass
class Bound:
    """One structure on the request path that must stay bounded."""

    name: str
    size: int
    bound: int

    @property
    def within(self) -> bool:
        return self.size <= self.bound


@dataclass
class MemoryResult:
    phase: str
    tokens: int
    completed: int
    statuses: dict[str, int]
    methods: dict[str, int]
    rss_start: int
    rss_end: int
    rss_peak: int
    blocks_start: int
    blocks_end: int
    warmup: int
    app_s: float
    total_s: float
    checkpoints: list[tuple[int, int]]  # (requests sent, RSS bytes)
    caches: list[Bound] = field(default_factory=list)
    error: str | None = None

    @property
    def growth(self) -> int:
        return self.rss_end - self.rss_start

    @property
    def within_limit(self) -> bool:
        return self.error is None and self.growth <= LIMIT_MIB * MIB

    @property
    def expected_status(self) -> int:
        return 200 if self.phase.endswith(" valid") else 401

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["caches"] = [{**asdict(b), "within": b.within} for b in self.caches]
        out["growth"] = self.growth
        out["growth_mib"] = round(self.growth / MIB, 2)
        out["within_limit"] = self.within_limit
        out["us_per_request"] = round(self.app_s / max(1, self.completed) * 1e6, 2)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MemoryResult:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["caches"] = [Bound(c["name"], c["size"], c["bound"]) for c in data["caches"]]
        known["checkpoints"] = [tuple(c) for c in data["checkpoints"]]
        return cls(**known)


# -- the child --------------------------------------------------------------------------


def _credentials(
    phase: str, issuer: Issuer, seed: int, count: int, *, warmup: bool = False
) -> Iterator[tuple[bytes, bytes]]:
    """`(header name, value)` for `count` distinct credentials of a phase. Warm-up ones
    are distinct from the measured ones, except valid API keys: the store holds as
    many keys as the phase sends, so the warm-up repeats the first few."""
    if phase == "jwt valid" or phase == "jwt invalid":
        start = 10**9 if warmup else 0
        for token in issuer.tokens(start, count, valid=phase == "jwt valid"):
            yield b"authorization", b"Bearer " + token.encode()
    elif phase == "api key valid":
        for key in plaintexts(seed, count):  # the store's own sequence
            yield b"x-api-key", key.encode()
    elif phase == "api key invalid":
        # Other sequences: well-formed, right checksum, ids the store does not have.
        for key_id, secret in key_parts(seed + (2 if warmup else 1), count):
            yield b"x-api-key", assemble(DEFAULT_PREFIX, key_id, secret).encode()
    else:
        raise ValueError(f"unknown phase {phase!r}")


def bounds(app: AuthMiddleware, jwt: JWTAuth, key: APIKeyAuth) -> list[Bound]:
    """Every cache and memo a request can add to, with its size and its bound."""

    def heap(cache: Any) -> int:
        # cachetools keeps a heap of expiry items beside a TLRU cache and compacts it
        # once it holds more than twice as many items as the cache.
        return len(getattr(cache, "_TLRUCache__order", ()))

    memo = jwt._keys._memo
    return [
        Bound("JWTAuth token cache (HitCache)", len(jwt._hits), jwt._hits.max_entries),
        Bound("JWTAuth header memo", len(jwt._headers), 64),
        Bound("JWTAuth key lookup memo", sum(map(len, memo.values())), 256 * max(1, len(memo))),
        Bound("APIKeyAuth key cache (HitCache)", len(key._hits), key._hits.max_entries),
        Bound("APIKeyAuth record cache (TLRU)", len(key._records), int(key._records.maxsize)),
        Bound(
            "APIKeyAuth record cache heap", heap(key._records), 2 * int(key._records.maxsize) + 1
        ),
        Bound("APIKeyAuth unknown-id cache (TLRU)", len(key._unknown), int(key._unknown.maxsize)),
        Bound(
            "APIKeyAuth unknown-id cache heap",
            heap(key._unknown),
            2 * int(key._unknown.maxsize) + 1,
        ),
        Bound("Gate credential memo", len(app.gate._known), gate_module._KNOWN_MAX),
        Bound("Rules decision memo", len(app.gate.rules._memo), rules_module._MEMO_ENTRIES),
        Bound("AsyncDriver in-flight lookups", len(app._driver._flights), 1),
    ]


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Recorder:
    """The `send` of every request: counts the statuses answered."""

    def __init__(self) -> None:
        self.statuses: Counter[str] = Counter()

    async def __call__(self, message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            self.statuses[str(message["status"])] += 1


async def _drive(
    app: AuthMiddleware, creds: list[tuple[bytes, bytes]], send: _Recorder, methods: Counter[str]
) -> None:
    template = apps.http_scope()
    common = template["headers"]
    for name, value in creds:
        scope = template.copy()
        scope["headers"] = [*common, (name, value)]
        await app(scope, _receive, send)
        ident = scope.get("auth")
        if ident is not None:
            methods[ident.method] += 1


def child(
    phase: str,
    tokens: int,
    db: Path,
    seed: int,
    deadline_s: float,
    cache_entries: int | None = None,
) -> MemoryResult:
    """One phase in this process. Call it in a fresh interpreter. `cache_entries`
    overrides the authenticators' default cache sizes (small ones fill fast in tests)."""
    started = perf_counter()
    issuer = Issuer(ISSUER, "HS256")
    jwt = issuer.auth(max_cache_entries=cache_entries)
    store = SQLiteKeyStore(db, hash_key=hash_key(seed))
    key = (
        APIKeyAuth(store)
        if cache_entries is None
        else APIKeyAuth(store, max_cache_entries=cache_entries)
    )
    app = AuthMiddleware(apps.bare_asgi, authenticators=[jwt, key])
    loop = asyncio.new_event_loop()
    try:
        warm = min(2_000, max(100, tokens // 100))
        creds = list(_credentials(phase, issuer, seed, warm, warmup=True))
        loop.run_until_complete(_drive(app, creds, _Recorder(), Counter()))
        del creds
        gc.collect()
        rss_start, _ = rss()
        blocks_start = sys.getallocatedblocks()

        send = _Recorder()
        methods: Counter[str] = Counter()
        checkpoints: list[tuple[int, int]] = [(0, rss_start)]
        every = max(CHUNK, tokens // 10)
        done, app_s, error = 0, 0.0, None
        # One generator for the whole run, read a chunk at a time: the key sequences
        # cannot seek, and all the tokens at once would count in the RSS.
        stream = _credentials(phase, issuer, seed, tokens)
        while done < tokens:
            if perf_counter() - started > deadline_s:
                error = f"stopped at the {deadline_s:g} s deadline"
                break
            n = min(CHUNK, tokens - done)
            creds = list(islice(stream, n))
            t0 = perf_counter()
            loop.run_until_complete(_drive(app, creds, send, methods))
            app_s += perf_counter() - t0
            done += n
            if done % every < CHUNK or done == tokens:
                checkpoints.append((done, rss()[0]))
        del creds
        gc.collect()
        rss_end, peak = rss()
        return MemoryResult(
            phase=phase,
            tokens=tokens,
            completed=done,
            statuses=dict(send.statuses),
            methods=dict(methods),
            rss_start=rss_start,
            rss_end=rss_end,
            rss_peak=peak,
            blocks_start=blocks_start,
            blocks_end=sys.getallocatedblocks(),
            warmup=warm,
            app_s=app_s,
            total_s=perf_counter() - started,
            checkpoints=checkpoints,
            caches=bounds(app, jwt, key),
            error=error,
        )
    finally:
        loop.close()
        store.close()


# -- the parent -------------------------------------------------------------------------


def run_phases(
    phases: tuple[str, ...],
    tokens: int,
    db: Path,
    seed: int,
    *,
    jobs: int = 1,
    deadline_s: float = 600.0,
    cache_entries: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[MemoryResult]:
    """Each phase in a fresh `python -m benchmarks.scale_memory`, `jobs` at a time. A
    child that fails or overruns gives a result carrying the error."""

    def one(phase: str) -> MemoryResult:
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.scale_memory",
            "--phase",
            phase,
            "--tokens",
            str(tokens),
            "--db",
            str(db),
            "--seed",
            str(seed),
            "--deadline",
            str(deadline_s),
        ]
        if cache_entries is not None:
            cmd += ["--cache-entries", str(cache_entries)]
        t0 = perf_counter()
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=deadline_s + 120,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return _failed(phase, tokens, f"no answer within {deadline_s + 120:g} s")
        if proc.returncode != 0 or not proc.stdout.strip():
            return _failed(phase, tokens, f"exit {proc.returncode}: {proc.stderr[-2000:]}")
        result = MemoryResult.from_dict(json.loads(proc.stdout.strip().splitlines()[-1]))
        if progress is not None:
            progress(
                f"memory {phase}: {result.growth / MIB:+.1f} MiB after {result.completed:,} "
                f"tokens ({perf_counter() - t0:.0f} s)"
            )
        return result

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, phases))


def _failed(phase: str, tokens: int, error: str) -> MemoryResult:
    return MemoryResult(phase, tokens, 0, {}, {}, 0, 0, 0, 0, 0, 0, 0.0, 0.0, [], [], error)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scale_memory", description=__doc__)
    p.add_argument("--phase", required=True, choices=PHASES)
    p.add_argument("--tokens", type=int, required=True)
    p.add_argument("--db", type=Path, required=True, help="a store built by scale_keys")
    p.add_argument("--seed", type=int, required=True, help="the seed the store was built from")
    p.add_argument("--deadline", type=float, default=600.0, help="stop after this many seconds")
    p.add_argument(
        "--cache-entries",
        type=int,
        help="max_cache_entries of both authenticators (default: theirs)",
    )
    args = p.parse_args(argv)
    result = child(args.phase, args.tokens, args.db, args.seed, args.deadline, args.cache_entries)
    print(json.dumps(result.as_dict()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

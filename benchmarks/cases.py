"""The cases, in groups. To add cases, write a function `(Fixture) -> list[Case]`, decorate
it with `@group`, and import its module in `benchmarks/suite.py` if it lives elsewhere;
`@target` adds a line to the summary. Every authenticated case has a "bare" twin of the
same kind (the same app without authgate) or is a floor (kind "floor": no comparison).
"""

from __future__ import annotations

import hashlib
import hmac
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from asgi_auth import APIKeyAuth, AuthMiddleware
from asgi_auth.keys import SQLiteKeyStore
from wsgi_auth import AuthMiddleware as WSGIAuthMiddleware

from . import apps
from .harness import (
    BARE,
    CRYPTO,
    FRAMEWORK,
    ASGIRunner,
    CallRunner,
    Case,
    Result,
    WSGIRunner,
)

KEY_CACHED = "API key, cached"
PUBLIC = "public path"
PUBLIC_PATH = "/health"


class Fixture:
    """What several groups share, made once per run: a key store with one key in a temp
    dir, and the authenticator over it with the key already in its cache."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="authgate-bench-")
        self.workdir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self._closers: list[Callable[[], None]] = []

    def on_close(self, fn: Callable[[], None]) -> None:
        """Run `fn` when the run ends (servers a group started, say), last added first."""
        self._closers.append(fn)

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()
        if "store" in self.__dict__:
            self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()

    @cached_property
    def store(self) -> SQLiteKeyStore:
        return SQLiteKeyStore(self.workdir / "keys.db")

    @cached_property
    def api_key(self) -> str:
        return self.store.create("bench", ["items:read"]).key

    @cached_property
    def key_auth(self) -> APIKeyAuth:
        # A TTL longer than any run: the cached cases must measure cache hits throughout.
        auth = APIKeyAuth(self.store, cache_ttl=3600.0)
        # One request on an event loop (a miss reads the store through the async driver)
        # puts the key in the cache.
        warm = ASGIRunner(
            AuthMiddleware(apps.bare_asgi, authenticators=[auth]),
            self.key_scope(),
            identity="api_key",
        )
        warm.use_loop()
        warm.check()
        warm.close()
        assert auth.cached(self.api_key) is not None, "the key did not get cached"
        return auth

    def key_headers(self) -> apps.Headers:
        return [(b"x-api-key", self.api_key.encode())]

    def key_scope(self, path: str = "/items") -> dict[str, Any]:
        return apps.http_scope(path, self.key_headers())

    def key_environ(self, path: str = "/items") -> dict[str, Any]:
        return apps.environ(path, X_API_KEY=self.api_key)


Group = Callable[[Fixture], list[Case]]
GROUPS: list[Group] = []


def group(fn: Group) -> Group:
    GROUPS.append(fn)
    return fn


@dataclass(frozen=True)
class Target:
    """A limit on overheads: each listed `(kind, case)` must stay within `limit_us`.
    With `minus`, the figure is the overhead minus that case's µs/request (a floor)."""

    label: str
    limit_us: float
    parts: tuple[tuple[str, str], ...]
    minus: tuple[str, str] | None = None
    primary: bool = False  # the headline target of this benchmark

    def evaluate(self, rows: Sequence[Result]) -> TargetResult | None:
        by = {(r.kind, r.case): r for r in rows}
        values: dict[str, float] = {}
        floor = 0.0
        if self.minus is not None:
            if self.minus not in by:
                return None
            floor = by[self.minus].median_us
        for kind, case in self.parts:
            r = by.get((kind, case))
            if r is None or r.overhead_us is None:
                continue
            values[kind] = r.overhead_us - floor
        if not values:
            return None
        return TargetResult(self, values, all(v <= self.limit_us for v in values.values()))


@dataclass(frozen=True)
class TargetResult:
    target: Target
    values: dict[str, float] = field(default_factory=dict)
    met: bool = False

    def line(self) -> str:
        t = self.target
        figures = ", ".join(f"{kind} {v:.2f} µs" for kind, v in self.values.items())
        verdict = "met" if self.met else "NOT met"
        return f"Target: {t.label} ≤ {t.limit_us:g} µs: {verdict} ({figures})"

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.target.label,
            "limit_us": self.target.limit_us,
            "values_us": {k: round(v, 4) for k, v in self.values.items()},
            "met": self.met,
            "primary": self.target.primary,
        }


TARGETS: list[Target] = [
    Target(
        "cached API key overhead under ASGI and WSGI",
        3.0,
        (("asgi", KEY_CACHED), ("wsgi", KEY_CACHED)),
        primary=True,
    )
]


def target(t: Target) -> Target:
    TARGETS.append(t)
    return t


# -- groups -----------------------------------------------------------------------------


@group
def asgi_cases(fx: Fixture) -> list[Case]:
    app = AuthMiddleware(apps.bare_asgi, authenticators=[fx.key_auth], public_paths=[PUBLIC_PATH])
    return [
        Case(BARE, "asgi", ASGIRunner(apps.bare_asgi, apps.http_scope())),
        Case(KEY_CACHED, "asgi", ASGIRunner(app, fx.key_scope(), identity="api_key")),
        Case(PUBLIC, "asgi", ASGIRunner(app, apps.http_scope(PUBLIC_PATH), identity="anonymous")),
    ]


@group
def asgi_fresh_cases(fx: Fixture) -> list[Case]:
    """As "asgi", with new header-name objects per request, as a server makes them."""
    app = AuthMiddleware(apps.bare_asgi, authenticators=[fx.key_auth])
    kind = "asgi, fresh headers"
    return [
        Case(BARE, kind, ASGIRunner(apps.bare_asgi, apps.http_scope(), fresh_header_names=True)),
        Case(
            KEY_CACHED,
            kind,
            ASGIRunner(app, fx.key_scope(), identity="api_key", fresh_header_names=True),
        ),
    ]


@group
def wsgi_cases(fx: Fixture) -> list[Case]:
    app = WSGIAuthMiddleware(
        apps.bare_wsgi, authenticators=[fx.key_auth], public_paths=[PUBLIC_PATH]
    )
    return [
        Case(BARE, "wsgi", WSGIRunner(apps.bare_wsgi, apps.environ())),
        Case(KEY_CACHED, "wsgi", WSGIRunner(app, fx.key_environ(), identity="api_key")),
        Case(PUBLIC, "wsgi", WSGIRunner(app, apps.environ(PUBLIC_PATH), identity="anonymous")),
    ]


@group
def fastapi_cases(fx: Fixture) -> list[Case]:
    bare = apps.fastapi_app()
    with_key = apps.fastapi_app()
    with_key.add_middleware(AuthMiddleware, authenticators=[fx.key_auth])
    return [
        Case(BARE, "fastapi", ASGIRunner(bare, apps.http_scope()), FRAMEWORK),
        Case(
            KEY_CACHED,
            "fastapi",
            ASGIRunner(with_key, fx.key_scope(), identity="api_key"),
            FRAMEWORK,
        ),
    ]


@group
def flask_cases(fx: Fixture) -> list[Case]:
    bare = apps.flask_app()
    with_key = apps.flask_app()
    with_key.wsgi_app = WSGIAuthMiddleware(  # type: ignore[method-assign]
        with_key.wsgi_app, authenticators=[fx.key_auth]
    )
    return [
        Case(BARE, "flask", WSGIRunner(bare, apps.environ()), FRAMEWORK),
        Case(
            KEY_CACHED,
            "flask",
            WSGIRunner(with_key, fx.key_environ(), identity="api_key"),
            FRAMEWORK,
        ),
    ]


@group
def floor_cases(fx: Fixture) -> list[Case]:
    """What checking a key costs at the very least, and what the cache hit costs."""
    key = fx.api_key
    stored = hashlib.sha256(key.encode()).digest()
    table = {stored: "bench"}

    def sha_dict_compare() -> bool:
        digest = hashlib.sha256(key.encode()).digest()
        return table.get(digest) is not None and hmac.compare_digest(digest, stored)

    assert sha_dict_compare()
    cached = fx.key_auth.cached
    return [
        Case("SHA-256 + dict + compare_digest", "floor", CallRunner(sha_dict_compare)),
        Case("APIKeyAuth.cached (cache hit)", "floor", CallRunner(lambda: cached(key))),
    ]


def build(fx: Fixture, select: Callable[[Case], bool] | None = None) -> list[Case]:
    """Every group's cases. With `select`, only the chosen cases and the bare cases of
    their kinds."""
    cases = [case for make in GROUPS for case in make(fx)]
    if select is not None:
        kinds = {c.kind for c in cases if c.name != BARE and select(c)}
        cases = [c for c in cases if c.kind in kinds and (c.name == BARE or select(c))]
    # Rows of a kind together, in the order the kinds first appear; floors last.
    order = {kind: i for i, kind in enumerate(dict.fromkeys(c.kind for c in cases))}
    order["floor"] = len(order)
    return sorted(cases, key=lambda c: order[c.kind])


__all__ = ["CRYPTO", "FRAMEWORK", "GROUPS", "TARGETS", "Fixture", "build", "group", "target"]

"""A JWKS cache that keeps working when the issuer does not.

Unlike PyJWT's `PyJWKClient`: a failed fetch or a garbage answer never clears good keys
(stale-if-error, up to `max_stale`); keys are merged by `kid`, so a key that is briefly
missing from an answer during an issuer's rollover keeps verifying for `missing_grace`;
refetches for unknown `kid`s are rate-limited; the I/O itself is single-flight in the
drivers. This module decides *when* to fetch and *what* the answer means; it never
does I/O itself.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import strict_json
from .http import HTTPResult
from .jose import VerifyKey, jwk_to_key

log = logging.getLogger("asgi_auth")

_MAX_AGE = re.compile(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)")
_PUBLIC_MEMBERS = ("kty", "crv", "n", "e", "x", "y")


class JWKSError(ValueError):
    """A JWKS answer that cannot replace the keys we have."""


@dataclass(slots=True)
class _Entry:
    key: VerifyKey
    missing_since: float | None = None


def _ttl_from(headers: Any, default: float, low: float, high: float) -> float:
    cc = headers.get("cache-control", "")
    if "no-store" in cc or "no-cache" in cc:
        return low
    m = _MAX_AGE.search(cc)
    ttl = float(m.group(1)) if m else default
    return min(max(ttl, low), high)


def parse_jwks(content: bytes) -> dict[str, VerifyKey]:
    """Usable signature keys of a JWKS document, by `kid` (or by public members when a
    key has none). Unusable single keys are skipped; a document with none is an error."""
    try:
        doc = strict_json.loads(content)
    except ValueError:
        raise JWKSError("JWKS is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JWKSError("JWKS has no keys array")
    keys: dict[str, VerifyKey] = {}
    for jwk in doc["keys"][:100]:
        if not isinstance(jwk, dict) or jwk.get("kty") == "oct":
            continue  # symmetric keys never come from a URL
        if jwk.get("use") not in (None, "sig"):
            continue  # encryption keys (often an alg we do not verify) are no concern here
        try:
            key = jwk_to_key(jwk)
        except (ValueError, TypeError) as exc:
            # Skipped, the others still serve; logged, or its tokens' `unknown_kid` would
            # hide why (say, an RSA exponent too large to verify with cheaply).
            log.warning("JWKS key skipped: kid=%.100r reason=%.200s", jwk.get("kid"), exc)
            continue
        ident = (
            key.kid
            if key.kid is not None
            else "~" + json.dumps({m: jwk.get(m) for m in _PUBLIC_MEMBERS}, sort_keys=True)
        )
        keys.setdefault(ident, key)
    if not keys:
        raise JWKSError("JWKS has no usable signature keys")
    return keys


@dataclass
class KeySet:
    """The keys of one issuer and the timing of their refreshes.

    Times come from the injected clock. `fresh_until` follows `Cache-Control: max-age`
    within `[min_ttl, max_ttl]`; from the last `refresh_ahead` fraction before it on, one
    request refreshes while the others go on with the current keys (stale ones too, up to
    `max_stale`). Requests wait for a fetch only when they cannot go on without it: no
    usable keys, or a `kid` the keys lack.
    """

    clock: Callable[[], float]
    min_ttl: float = 60.0
    max_ttl: float = 86400.0
    default_ttl: float = 600.0
    refresh_ahead: float = 0.1
    unknown_kid_interval: float = 30.0
    retry_interval: float = 5.0
    max_stale: float = 86400.0
    missing_grace: float = 900.0
    static: bool = False

    _entries: dict[str, _Entry] = field(default_factory=dict)
    fetched_at: float | None = None
    fresh_until: float = 0.0
    last_attempt: float = float("-inf")
    last_failure: float = float("-inf")
    last_unknown_refetch: float = float("-inf")
    generation: int = 0
    #: The last fetch failed: the keys held may lack the issuer's newest.
    failing: bool = False
    #: When the fetch in flight began (-inf: none): see `mark` and `unmark`. A request
    #: with an unknown `kid` joins that fetch (never starts one) rather than being
    #: refused by the refetch rate limit while it runs.
    fetching_since: float = float("-inf")
    #: Before this time no refresh is due and no key is due to expire, so a lookup
    #: needs no bookkeeping (see `JWTAuth.flow`). Only ever moved by the methods below.
    settled_until: float = float("-inf")
    _missing_since: float | None = None  # the oldest absence, so lookups skip the scan
    # alg -> kid -> keys; replaced whenever the entries change (see _set_entries)
    _memo: dict[str, dict[str | None, list[VerifyKey]]] = field(default_factory=dict)
    # Held only while a fetched answer is merged, never across I/O: WSGI threads that
    # shared one fetch must merge it once, or a replaced key could stay in use.
    _merge: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # The last few answers merged: one fetch's answer reaches its settle hook and every
    # request that shared it, some late, after a newer answer (another driver's fetch).
    _merged: tuple[HTTPResult, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, keys: Iterable[VerifyKey], clock: Callable[[], float]) -> KeySet:
        ks = cls(clock=clock, static=True)
        for i, key in enumerate(keys):
            ks._entries[key.kid if key.kid is not None else f"~{i}"] = _Entry(key)
        ks.fetched_at, ks.fresh_until = clock(), float("inf")
        ks._settle()
        return ks

    # -- when to fetch -------------------------------------------------------------------

    def usable(self, now: float) -> bool:
        """Keys we may verify with: fresh, or stale but within `max_stale`."""
        return self.fetched_at is not None and now <= self.fresh_until + self.max_stale

    def due(self, now: float) -> bool:
        """A refresh is due: no keys yet, or in the last `refresh_ahead` of their TTL, or
        past it; but not again within `retry_interval` of a failure."""
        if self.static:
            return False
        if now - self.last_failure < self.retry_interval:
            return False  # an issuer that just failed is not hammered; stale keys serve
        if self.fetched_at is None:
            return True
        ttl = self.fresh_until - self.fetched_at
        return now >= self.fresh_until - ttl * self.refresh_ahead

    def fetching(self, now: float, timeout: float) -> bool:
        """A fetch is in flight (begun less than `timeout` ago: a request cancelled while
        it fetched leaves no trace, so the mark expires)."""
        return now - self.fetching_since < timeout

    def mark(self, now: float) -> float:
        """Note a fetch starting now; `unmark(mark)` (or its expiry) ends it."""
        self.fetching_since = now
        return now

    def unmark(self, mark: float | None) -> None:
        """End the fetch that began at `mark`, if it is still the one marked."""
        if mark is not None and self.fetching_since == mark:
            self.fetching_since = float("-inf")

    def may_refetch_for_unknown_kid(self, now: float) -> bool:
        return (
            not self.static
            and now - self.last_unknown_refetch >= self.unknown_kid_interval
            and now - self.last_failure >= self.retry_interval
        )

    # -- results ---------------------------------------------------------------------------

    def update(self, result: HTTPResult, now: float) -> None:
        """Merge a fetched JWKS; raises JWKSError (keeping the current keys) on garbage.

        One fetch's answer reaches the driver's settle hook and every request that
        shared it: the first to get here merges it (or raises), the others return."""
        with self._merge:
            if any(result is seen for seen in self._merged):
                return
            self._merged = (result, *self._merged[:3])
            if result.status != 200:
                raise JWKSError(f"JWKS answered {result.status}")
            fresh = parse_jwks(result.content)
            # Copy on write: readers on other threads always see a whole dict.
            entries = dict(self._entries)
            for ident, key in fresh.items():
                old = entries.get(ident)
                if old is not None and _same(old.key, key):
                    old.missing_since = None
                    old.key.until = float("inf")  # back in the answers
                    continue
                if old is not None:
                    old.key.until = float("-inf")  # same kid, new material: the old key is gone
                entries[ident] = _Entry(key)
            for ident, entry in list(entries.items()):
                if ident not in fresh and entry.missing_since is None:
                    entry.missing_since = now
                    # Tokens it verified, cached ones too, count until its grace ends.
                    entry.key.until = now + self.missing_grace
            self._set_entries(entries)
            self._note_missing()
            self._drop_missing(now)
            self.fetched_at = now
            self.failing = False
            self.fresh_until = now + _ttl_from(
                result.headers, self.default_ttl, self.min_ttl, self.max_ttl
            )
            self.generation += 1
            self._settle()

    def failed(self, now: float) -> None:
        self.last_failure = now
        self.failing = True

    def failed_first(self, now: float) -> bool:
        """`failed`, and whether this is the first failure in `retry_interval`: one check
        and write under the lock, so of many threads sharing one failure one logs it."""
        with self._merge:
            first = now - self.last_failure >= self.retry_interval
            self.failed(now)
        return first

    def expire_missing(self, now: float) -> None:
        """Drop keys absent from the issuer's answers for longer than the grace."""
        if self._overdue(now):  # checked again under the lock, where it can change
            with self._merge:
                self._drop_missing(now)

    def _overdue(self, now: float) -> bool:
        """Some key has been missing for longer than the grace."""
        return self._missing_since is not None and now - self._missing_since >= self.missing_grace

    def _drop_missing(self, now: float) -> None:
        if not self._overdue(now):
            return
        gone = [
            ident
            for ident, e in self._entries.items()
            if e.missing_since is not None and now - e.missing_since >= self.missing_grace
        ]
        if gone:
            entries = dict(self._entries)
            for ident in gone:
                entries.pop(ident).key.until = float("-inf")
            self._set_entries(entries)
        self._note_missing()

    def _set_entries(self, entries: dict[str, _Entry]) -> None:
        self._memo = {}  # first, so no lookup pairs the new entries with an old answer
        self._entries = entries
        self._memo = {}

    def _note_missing(self) -> None:
        since = [e.missing_since for e in self._entries.values() if e.missing_since is not None]
        self._missing_since = min(since) if since else None
        self._settle()

    def _settle(self) -> None:
        if self.fetched_at is None:
            self.settled_until = float("-inf")
            return
        ttl = self.fresh_until - self.fetched_at
        until = self.fresh_until - ttl * self.refresh_ahead if ttl != float("inf") else ttl
        if self._missing_since is not None:
            until = min(until, self._missing_since + self.missing_grace)
        self.settled_until = until

    # -- lookup ----------------------------------------------------------------------------

    def find(self, kid: str | None, alg: str) -> list[VerifyKey]:
        """Keys that may verify a token with this `kid` and `alg`. `kid` is only a
        dictionary key here: it never names a file, URL or query."""
        memo = self._memo
        by_kid = memo.get(alg)
        if by_kid is not None:
            found = by_kid.get(kid)
            if found is not None:
                return found
        found = self._find(kid, alg)
        if found:  # only real keys; kid-less key sets could see any kid, so bounded too
            by_kid = memo.setdefault(alg, {})
            if len(by_kid) >= 256:
                by_kid.clear()
            by_kid[kid] = found
        return found

    def _find(self, kid: str | None, alg: str) -> list[VerifyKey]:
        entries = self._entries
        if kid is not None:
            entry = entries.get(kid)
            if entry is not None and entry.key.fits(alg):
                return [entry.key]
            if entry is not None:
                return []
        return [
            e.key
            for e in entries.values()
            if (kid is None or e.key.kid is None) and e.key.fits(alg)
        ][:4]

    def knows(self, kid: str | None) -> bool:
        return kid is None or kid in self._entries


def _same(a: VerifyKey, b: VerifyKey) -> bool:
    return a.kty == b.kty and a.alg == b.alg and a.public_bytes() == b.public_bytes()

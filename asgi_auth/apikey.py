"""API key authentication (`X-API-Key`, or `Authorization: ApiKey <key>`)."""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from types import MappingProxyType

from cachetools import TLRUCache

from .authenticator import RequestInfo, require_durations, require_timeouts
from .cache import HitCache
from .errors import Challenge, InvalidToken, ServiceUnavailable
from .flow import Effect, EffectFailed, Flow
from .identity import Identity, build_identity
from .keys.base import KeyRecord, KeyStore
from .keys.format import DEFAULT_PREFIX, KeyFormatError, check_prefix, hash_secret, parse

_INF = float("inf")
logger = logging.getLogger("asgi_auth")
# A secret that matches no hash of a *cached* record may be a key rotated since the record
# was fetched: look the record up again, at most this often per key id (bounded I/O for
# attackers who know an id), so a new key works within a second, not after `cache_ttl`.
_RECHECK_AFTER = 1.0
# After a failed lookup, stale records (see `max_stale`) serve this long without asking
# the store again: a store that is down is not hammered, and requests do not wait.
_STALE_RETRY = 1.0


class APIKeyAuth:
    """Checks API keys against a `KeyStore`.

    ```python
    APIKeyAuth(SQLiteKeyStore("keys.db"))                      # X-API-Key: agk_...
    APIKeyAuth(store, header=None, scheme="ApiKey")            # Authorization: ApiKey agk_...
    ```

    - The key's format and checksum are checked before any lookup, so garbage costs no I/O.
    - A verified key is cached (by the exact key) for `cache_ttl` seconds, bounded by
      the key's expiry and by its rotation grace. Unknown ids are remembered for
      `negative_ttl` in a separate bounded cache, so random keys can neither flood the
      store nor evict good entries.
    - Revocation: a key created, rotated or revoked through the store is dropped from
      these caches at once (the store calls `invalidate`; `RedisKeyStore` also delivers
      other processes' writes). `cache_ttl` bounds it for writes no one announced.
    - `max_stale` (0: off): while the store is unreachable, a record whose `cache_ttl`
      passed keeps serving up to this many seconds more (as JWKS keys do), instead of a
      503. Keys not cached get 503 with `Retry-After` either way.
    - `query_param` accepts the key in the URL query; off by default because URLs end up
      in logs and browser history.
    """

    method = "api_key"

    def __init__(
        self,
        store: KeyStore,
        *,
        header: str | None = "X-API-Key",
        scheme: str | None = None,
        query_param: str | None = None,
        prefixes: Iterable[str] = (DEFAULT_PREFIX,),
        cache_ttl: float = 60.0,
        negative_ttl: float = 10.0,
        max_cache_entries: int = 10_000,
        store_timeout: float = 2.0,
        max_stale: float = 0.0,
        realm: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if header is None and scheme is None and query_param is None:
            raise ValueError("APIKeyAuth needs a header, an Authorization scheme or a query param")
        require_durations("APIKeyAuth", cache_ttl=cache_ttl, negative_ttl=negative_ttl)
        if max_stale < 0:
            raise ValueError("APIKeyAuth: max_stale must be >= 0")
        require_timeouts("APIKeyAuth", store_timeout=store_timeout)
        if max_cache_entries < 1:
            raise ValueError("max_cache_entries must be >= 1")
        self.store = store
        self.header = header.lower() if header else None
        self.schemes: tuple[str, ...] = (scheme.lower(),) if scheme else ()
        self.query_param = query_param
        self.prefixes = frozenset(check_prefix(p) for p in prefixes)
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.max_cache_entries = max_cache_entries
        self.store_timeout = store_timeout
        self.max_stale = max_stale
        self._clock = clock
        params = [("realm", realm)] if realm else []
        if header:
            params.append(("header", header))
        self.challenge = Challenge(scheme or "ApiKey", tuple(params))
        self._hits = HitCache(max_cache_entries, clock)
        #: The hot path: the Identity of a key verified within `cache_ttl`, or None.
        #: Bound straight to the cache, to spare a call per request.
        self.cached: Callable[[str], Identity | None] = self._hits.get
        self._records: TLRUCache[str, tuple[KeyRecord, float]] = TLRUCache(
            maxsize=max_cache_entries, ttu=self._record_ttu, timer=clock
        )
        self._unknown: TLRUCache[str, bool] = TLRUCache(
            maxsize=max_cache_entries, ttu=self._unknown_ttu, timer=clock
        )
        self._lock = threading.Lock()
        #: Bumped by every `invalidate`: a lookup or check that began before one does
        #: not cache its result (it may predate the change announced).
        self._generation = 0
        self._store_failed_at = float("-inf")
        self._stale_logged = False
        store.listen(self.invalidate)

    def __repr__(self) -> str:
        return f"APIKeyAuth(store={self.store!r}, header={self.header!r})"

    def _record_ttu(self, _k: str, _v: object, now: float) -> float:
        return now + self.cache_ttl + self.max_stale

    def _unknown_ttu(self, _k: str, _v: object, now: float) -> float:
        return now + self.negative_ttl

    def accepts(self, token: str) -> bool:
        return True

    def invalidate(self, key_id: str | None = None) -> None:
        """Forget cached results (all, or one key's). The store calls it after a write."""
        with self._lock:
            self._generation += 1
            if key_id is None:
                self._records.clear()
                self._unknown.clear()
            else:
                self._records.pop(key_id, None)
                self._unknown.pop(key_id, None)
        self._hits.discard(None if key_id is None else lambda ident: ident.key_id == key_id)

    def flow(self, token: str, request: RequestInfo) -> Flow[Identity]:
        try:
            prefix, key_id, secret = parse(token, self.prefixes)
        except KeyFormatError as exc:
            raise InvalidToken(str(exc), reason=exc.reason, scheme=self.challenge.scheme) from None
        ctx = {"key_id": key_id}
        with self._lock:
            generation = self._generation
            cached = self._records.get(key_id)
            unknown = key_id in self._unknown
        if unknown:
            raise InvalidToken(
                "unknown API key", reason="unknown_key", scheme=self.challenge.scheme, context=ctx
            )
        if cached is None:
            record, fetched_at = yield from self._fetch(key_id, ctx, generation)
        else:
            record, fetched_at = cached
            age = self._clock() - fetched_at
            if age >= self.cache_ttl:  # kept past its TTL only for `max_stale`
                record, fetched_at = yield from self._refresh_stale(key_id, ctx, cached, generation)
            elif age >= min(_RECHECK_AFTER, self.cache_ttl) and not self._matches(
                key_id, secret, record
            ):
                record, fetched_at = yield from self._fetch(key_id, ctx, generation, fetched_at)
        return self._verify(token, prefix, key_id, secret, record, fetched_at, generation)

    def _refresh_stale(
        self,
        key_id: str,
        ctx: dict[str, str],
        stale: tuple[KeyRecord, float],
        generation: int,
    ) -> Flow[tuple[KeyRecord, float]]:
        """A fresh record, or while the store is down (and just failed), the stale one."""
        now = self._clock()
        if now - stale[1] >= self.cache_ttl + self.max_stale:
            return (yield from self._fetch(key_id, ctx, generation, stale[1]))
        if now - self._store_failed_at < _STALE_RETRY:
            return self._serve_stale(key_id, stale)
        try:
            return (yield from self._fetch(key_id, ctx, generation, stale[1]))
        except ServiceUnavailable:
            return self._serve_stale(key_id, stale)

    def _serve_stale(self, key_id: str, stale: tuple[KeyRecord, float]) -> tuple[KeyRecord, float]:
        if not self._stale_logged:
            self._stale_logged = True
            logger.warning(
                "API key store unavailable: serving cached records up to max_stale=%ss "
                "past their TTL (key_id=%s)",
                self.max_stale,
                key_id,
            )
        return stale

    def _fetch(
        self,
        key_id: str,
        ctx: dict[str, str],
        generation: int,
        newer_than: float = float("-inf"),
    ) -> Flow[tuple[KeyRecord, float]]:
        with self._lock:
            fresh = self._records.get(key_id)
        if fresh is not None and fresh[1] > newer_than:
            return fresh  # another request fetched it meanwhile
        try:
            if self.store.local:
                try:
                    record = self.store.get(key_id)
                except Exception as exc:  # a broken store is a 503, never a 500
                    raise EffectFailed(self._effect(key_id), exc) from exc
            else:
                record = yield self._effect(key_id)
        except EffectFailed as exc:
            self._store_failed_at = self._clock()
            raise ServiceUnavailable(
                "API key store unavailable",
                reason="key_store_unavailable",
                context={**ctx, "error": type(exc.cause).__name__},
            ) from None
        fetched_at = self._clock()
        self._stale_logged = False
        with self._lock:
            # A change announced while this lookup ran may postdate what it read: use the
            # answer for this request, but do not cache it.
            if self._generation == generation:
                if record is None:
                    self._records.pop(key_id, None)
                    self._unknown[key_id] = True
                else:
                    self._records[key_id] = (record, fetched_at)
        if record is None:
            raise InvalidToken(
                "unknown API key",
                reason="unknown_key",
                scheme=self.challenge.scheme,
                context=ctx,
            )
        return record, fetched_at

    def _effect(self, key_id: str) -> Effect:
        return Effect(
            key=("api_key", id(self.store), key_id),
            sync=partial(self.store.get, key_id),
            async_=partial(self.store.aget, key_id),
            timeout=self.store_timeout,
        )

    def _compare(self, key_id: str, secret: str, record: KeyRecord) -> tuple[bool, bool]:
        """Whether the secret matches the current and the previous (rotated) hash. Both
        are always compared, so timing does not tell which matched."""
        digest = hash_secret(self.store.hash_key, key_id, secret)
        current = hmac.compare_digest(digest, record.secret_hash)
        previous = record.previous_hash is not None and hmac.compare_digest(
            digest, record.previous_hash
        )
        return current, previous

    def _matches(self, key_id: str, secret: str, record: KeyRecord) -> bool:
        current, previous = self._compare(key_id, secret, record)
        return current or previous

    def _verify(
        self,
        token: str,
        prefix: str,
        key_id: str,
        secret: str,
        record: KeyRecord,
        fetched_at: float,
        generation: int,
    ) -> Identity:
        now = self._clock()
        scheme = self.challenge.scheme
        ctx = {"key_id": key_id}
        deadline = fetched_at + self.cache_ttl
        current, previous = self._compare(key_id, secret, record)
        if not current:
            grace_end = record.previous_expires_at or 0.0
            if not previous or grace_end <= now:
                reason = "rotated_secret" if previous else "wrong_secret"
                raise InvalidToken("invalid API key", reason=reason, scheme=scheme, context=ctx)
            deadline = min(deadline, grace_end)
        if prefix != record.prefix:
            # The checksum is a CRC, not a MAC: a holder of a `test_` key can re-spell it
            # `live_...` and recompute it. The prefix the key was issued with is kept in
            # its record, and users treat it as an environment boundary, so only that
            # spelling is the key. (Checked after the secret, so this answer only tells
            # someone who holds the key what they already know.)
            raise InvalidToken(
                "invalid API key", reason="prefix_mismatch", scheme=scheme, context=ctx
            )
        status = record.status(now)
        if status != "active":
            raise InvalidToken(f"API key {status}", reason=status, scheme=scheme, context=ctx)
        if record.expires_at is not None:
            deadline = min(deadline, record.expires_at)
        if record.revoked_at is not None:
            deadline = min(deadline, record.revoked_at)
        identity = build_identity(
            record.subject or record.key_id,
            record.scopes,
            self.method,
            MappingProxyType({"name": record.name, **record.metadata}),
            record.expires_at,
            record.key_id,
            None,
            None,
            None,
            record.name,
        )
        self._hits.put(token, identity, deadline)
        if self._generation != generation:
            # `invalidate` ran meanwhile (it bumps the generation before it drops hits):
            # this identity may rest on a record it has just declared out of date.
            self._hits.pop(token)
        return identity

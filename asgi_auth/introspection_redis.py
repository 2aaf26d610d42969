"""Introspection answers shared through Redis (or Valkey) by every worker. Extra "redis"."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
import threading
import time
from typing import Any

try:
    import redis.asyncio as aioredis
except ModuleNotFoundError as exc:  # pragma: no cover - the core alone, without the extra
    raise ImportError(
        "RedisIntrospectionCache needs the redis extra (redis-py is missing): "
        "pip install 'authgate[redis]'",
        name=exc.name,
    ) from exc

from .keys.redis import HASH_KEY_ENV, RedisClients, redact_url

log = logging.getLogger("asgi_auth")


class RedisIntrospectionCache:
    """A cache of introspection answers that N workers share, so a token is asked about
    once per fleet rather than once per worker.

    ```python
    shared = RedisIntrospectionCache("redis://redis.internal:6379/0")
    IntrospectionAuth(issuer=..., client_id=..., client_secret=..., shared_cache=shared)
    ```

    `IntrospectionAuth` looks here after its own cache and before the endpoint, and
    writes every answer back with the time it has left (`SET ... PX`): never past the
    token's `exp` nor `cache_ttl`; inactive answers for `negative_ttl`.

    Keys are `{ns}:introspection:<HMAC-SHA256(hash_key, endpoint, client_id, token)>`,
    never the token; values are the answer (JSON) and its deadline. The HMAC key comes
    from `hash_key=`, else `AUTHGATE_HASH_KEY` (hex), else `{ns}:hash_key` in Redis
    (created once with `SET NX`, as `RedisKeyStore` does, and planted again after Redis
    lost it). Every call is bounded by `timeout`. Redis down or slow: the endpoint is
    asked directly (one warning per outage) and Redis is left alone for `retry_after`
    seconds; the shared cache is an optimisation, never a source of truth.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "authgate",
        timeout: float = 0.25,
        hash_key: bytes | None = None,
        retry_after: float = 1.0,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError("namespace must be non-empty and free of braces")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        if hash_key is None and os.environ.get(HASH_KEY_ENV):
            hash_key = bytes.fromhex(os.environ[HASH_KEY_ENV])
        if hash_key is not None and len(hash_key) < 16:
            raise ValueError("hash_key must be at least 16 bytes")
        self._url = url
        self.namespace = namespace
        self.timeout = timeout
        self.retry_after = retry_after
        self._hash_key = hash_key
        self._stored_key = hash_key is None  # the key lives in Redis, not in the config
        tag = "{" + namespace + "}"
        self._prefix = f"{tag}:introspection:"
        self._hash_key_name = f"{tag}:hash_key"
        self._redis = RedisClients(url, timeout, retries=1)
        self._client = self._redis.sync
        self._state_lock = threading.Lock()
        self._down_until: float | None = None  # None: up; else skipped until then

    def __repr__(self) -> str:
        return f"RedisIntrospectionCache({redact_url(self._url)!r}, namespace={self.namespace!r})"

    @property
    def url(self) -> str:
        """The URL, its password masked."""
        return redact_url(self._url)

    def _aclient(self) -> aioredis.Redis:
        return self._redis.for_loop()

    # -- health: one warning per outage ---------------------------------------------------

    def available(self) -> bool:
        """False for `retry_after` seconds after a failure: the endpoint is asked directly."""
        down_until = self._down_until
        return down_until is None or time.monotonic() >= down_until

    def failed(self, error: BaseException) -> None:
        with self._state_lock:
            first = self._down_until is None
            self._down_until = time.monotonic() + self.retry_after
        if first:
            log.warning(
                "shared introspection cache %s unavailable (%s); asking the endpoint directly",
                redact_url(self._url),
                type(error).__name__,
            )

    def succeeded(self) -> None:
        if self._down_until is not None:
            with self._state_lock:
                was_down, self._down_until = self._down_until is not None, None
            if was_down:
                log.warning("shared introspection cache %s is back", redact_url(self._url))

    # -- keys -----------------------------------------------------------------------------

    def _checked_hash_key(self, value: Any) -> bytes:
        if not isinstance(value, bytes) or len(value) < 16:
            raise RuntimeError(f"{self._hash_key_name} in Redis is not a hash key")
        return value

    def _key(self, hash_key: bytes, material: bytes) -> str:
        mac = hmac.new(hash_key, b"authgate-introspection\0" + material, hashlib.sha256)
        return self._prefix + mac.hexdigest()

    # -- sync (WSGI) ----------------------------------------------------------------------

    def _sync_hash_key(self) -> bytes:
        if self._hash_key is None:
            self._client.set(self._hash_key_name, secrets.token_bytes(32), nx=True)
            self._hash_key = self._checked_hash_key(self._client.get(self._hash_key_name))
        return self._hash_key

    def get(self, material: bytes) -> bytes | None:
        """The stored value for `material` (endpoint, client id and token), or None."""
        value = self._client.get(self._key(self._sync_hash_key(), material))
        return value if isinstance(value, bytes) else None

    def put(self, material: bytes, value: bytes, ttl_ms: int) -> None:
        hash_key = self._sync_hash_key()
        pipe = self._client.pipeline(transaction=False)
        if self._stored_key:  # Redis restarted empty: later processes find this key again
            pipe.set(self._hash_key_name, hash_key, nx=True)
        pipe.set(self._key(hash_key, material), value, px=ttl_ms)
        pipe.execute()

    # -- async (ASGI) ---------------------------------------------------------------------

    async def _async_hash_key(self) -> bytes:
        if self._hash_key is None:
            client = self._aclient()
            await client.set(self._hash_key_name, secrets.token_bytes(32), nx=True)
            self._hash_key = self._checked_hash_key(await client.get(self._hash_key_name))
        return self._hash_key

    async def aget(self, material: bytes) -> bytes | None:
        hash_key = await self._async_hash_key()
        value = await self._aclient().get(self._key(hash_key, material))
        return value if isinstance(value, bytes) else None

    async def aput(self, material: bytes, value: bytes, ttl_ms: int) -> None:
        hash_key = await self._async_hash_key()
        pipe = self._aclient().pipeline(transaction=False)
        if self._stored_key:
            pipe.set(self._hash_key_name, hash_key, nx=True)
        pipe.set(self._key(hash_key, material), value, px=ttl_ms)
        await pipe.execute()

    def close(self) -> None:
        """Close the sync client's connections (async clients close with their loops)."""
        self._redis.close()

    async def aclose(self) -> None:
        """Close this event loop's async client."""
        await self._redis.aclose()

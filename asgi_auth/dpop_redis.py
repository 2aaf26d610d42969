"""A DPoP replay cache in Redis (or Valkey): one memory of proof `jti`s for a fleet.
Extra "redis"."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable

try:
    import redis
    import redis.asyncio as aioredis
except ModuleNotFoundError as exc:  # pragma: no cover - the core alone, without the extra
    raise ImportError(
        "RedisReplayCache needs the redis extra (redis-py is missing): "
        "pip install 'authgate[redis]'",
        name=exc.name,
    ) from exc

from .errors import ServiceUnavailable
from .keys.redis import RedisClients, redact_url


class RedisReplayCache:
    """A `ReplayCache` shared by every process and host that reaches one Redis: a proof
    accepted by one worker is refused by all the others.

    ```python
    verifier = DPoPVerifier(replay_cache=RedisReplayCache("redis://redis.internal:6379/0"))
    ```

    Each proof is one `SET <key> 1 NX PX <ms>`: atomic, so of two workers given the same
    proof at once exactly one accepts it, and the entry expires when the proof could no
    longer be accepted anyway (`iat + max_age + leeway`). The key is
    `{namespace}:dpop:` and the SHA-256 of what the verifier passes (the proof key's
    thumbprint and the `jti`): no `jti` is stored in plaintext.

    Under ASGI the check is awaited on redis-py's asyncio client (one per event loop),
    so it never blocks the loop; under WSGI it uses the sync client. Every call is bounded
    by `timeout` (connect and socket time-outs, no retry). A failure or time-out is a 503
    with `Retry-After` (fail closed: never a 200 for a proof that may be a replay, never a
    401 for a good one); the next request connects again.
    """

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "authgate",
        timeout: float = 0.5,
        retry_after: int = 5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError("namespace must be non-empty and free of braces")
        if not timeout > 0:
            raise ValueError("timeout must be > 0")
        self._url = url
        self.namespace = namespace
        self.timeout = timeout
        self.retry_after = retry_after
        self._clock = clock
        self._prefix = "{" + namespace + "}:dpop:"
        self._redis = RedisClients(url, timeout, retries=0)
        self._client = self._redis.sync

    def _aclient(self) -> aioredis.Redis:
        return self._redis.for_loop()

    def __repr__(self) -> str:
        return f"RedisReplayCache({redact_url(self._url)!r}, namespace={self.namespace!r})"

    @property
    def url(self) -> str:
        """The URL, its password masked."""
        return redact_url(self._url)

    def key(self, jti: str) -> str:
        """The Redis key of a replay key: hashed, so Redis never holds a `jti`."""
        return self._prefix + hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()

    def _ttl_ms(self, expires_at: float) -> int:
        return max(1, int((expires_at - self._clock()) * 1000) + 1)

    def _unavailable(self, exc: BaseException) -> ServiceUnavailable:
        return ServiceUnavailable(
            "DPoP replay cache unavailable",
            retry_after=self.retry_after,
            reason="dpop_replay_unavailable",
            context={"error": type(exc).__name__, "redis": self.url},
        )

    def seen(self, jti: str, expires_at: float) -> bool:
        try:
            added = self._client.set(self.key(jti), b"1", nx=True, px=self._ttl_ms(expires_at))
        except (redis.RedisError, OSError) as exc:
            raise self._unavailable(exc) from None
        return not added

    async def aseen(self, jti: str, expires_at: float) -> bool:
        """`seen` on this event loop's asyncio client."""
        client = self._aclient()
        try:
            async with asyncio.timeout(2 * self.timeout):  # connect, then the reply
                added = await client.set(self.key(jti), b"1", nx=True, px=self._ttl_ms(expires_at))
        except (redis.RedisError, OSError, TimeoutError) as exc:
            raise self._unavailable(exc) from None
        return not added

    def close(self) -> None:
        """Close the sync client's connections (async clients close with their loops)."""
        self._redis.close()

    async def aclose(self) -> None:
        """Close this event loop's async client."""
        await self._redis.aclose()

"""A DPoP replay cache in Redis (or Valkey): one memory of proof `jti`s for a fleet.
Extra "redis"."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ModuleNotFoundError as exc:  # pragma: no cover - the core alone, without the extra
    raise ImportError(
        "RedisReplayCache needs the redis extra (redis-py is missing): "
        "pip install 'authgate[redis]'",
        name=exc.name,
    ) from exc

from .errors import ServiceUnavailable
from .keys.redis import redact_url


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

    The check runs inside the request, synchronously (under ASGI on the event loop), so
    every call is bounded by `timeout` (connect and socket time-outs, no retry): a slow or
    unreachable Redis holds a request, and the loop, for at most about that long. A failure
    or time-out is a 503 with `Retry-After` (fail closed: never a 200 for a proof that
    may be a replay, never a 401 for a good one); the next request connects again.
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
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )

    def __repr__(self) -> str:
        return f"RedisReplayCache({redact_url(self._url)!r}, namespace={self.namespace!r})"

    @property
    def url(self) -> str:
        """The URL, its password masked."""
        return redact_url(self._url)

    def key(self, jti: str) -> str:
        """The Redis key of a replay key: hashed, so Redis never holds a `jti`."""
        return self._prefix + hashlib.sha256(jti.encode("utf-8", "surrogatepass")).hexdigest()

    def seen(self, jti: str, expires_at: float) -> bool:
        ttl_ms = max(1, int((expires_at - self._clock()) * 1000) + 1)
        try:
            added = self._client.set(self.key(jti), b"1", nx=True, px=ttl_ms)
        except (redis.RedisError, OSError) as exc:
            raise ServiceUnavailable(
                "DPoP replay cache unavailable",
                retry_after=self.retry_after,
                reason="dpop_replay_unavailable",
                context={"error": type(exc).__name__, "redis": self.url},
            ) from None
        return not added

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()

"""A key store in Redis (or Valkey): one store for a fleet of servers. Extra "redis"."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import weakref
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

try:
    import redis
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ModuleNotFoundError as exc:  # pragma: no cover - the core alone, without the extra
    raise ImportError(
        "RedisKeyStore needs the redis extra (redis-py is missing): pip install 'authgate[redis]'",
        name=exc.name,
    ) from exc

from .base import KeyRecord, KeyStore

HASH_KEY_ENV = "AUTHGATE_HASH_KEY"
#: Writers that lose a race (WATCH) try again this many times before giving up.
_WRITE_ATTEMPTS = 64

# Insert a record if its id is free, and index it, in one step.
_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


def redact_url(url: str) -> str:
    """The URL without its password (for reprs, logs and error messages)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        user = parts.username or ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "<unparsable redis URL>"


def _num(value: bytes | None) -> float | None:
    return None if value is None else float(value)


def _fields_to_record(key_id: str, f: Mapping[Any, Any]) -> KeyRecord:
    subject = f.get(b"subject")
    return KeyRecord(
        key_id=key_id,
        prefix=f[b"prefix"].decode(),
        name=f[b"name"].decode(),
        subject=None if subject is None else subject.decode(),
        scopes=frozenset(f[b"scopes"].decode().split()),
        secret_hash=bytes(f[b"secret_hash"]),
        previous_hash=f.get(b"previous_hash"),
        previous_expires_at=_num(f.get(b"previous_expires_at")),
        created_at=float(f[b"created_at"]),
        expires_at=_num(f.get(b"expires_at")),
        revoked_at=_num(f.get(b"revoked_at")),
        metadata=MappingProxyType(json.loads(f.get(b"metadata", b"{}"))),
    )


def _record_to_fields(r: KeyRecord) -> dict[str, bytes | str]:
    """The record as hash fields; absent values are absent fields. Floats use `repr`,
    which reads back exactly."""
    fields: dict[str, bytes | str] = {
        "prefix": r.prefix,
        "name": r.name,
        "scopes": " ".join(sorted(r.scopes)),
        "secret_hash": r.secret_hash,
        "created_at": repr(r.created_at),
        "metadata": json.dumps(dict(r.metadata), sort_keys=True),
    }
    optional = {
        "subject": r.subject,
        "previous_hash": r.previous_hash,
        "previous_expires_at": r.previous_expires_at,
        "expires_at": r.expires_at,
        "revoked_at": r.revoked_at,
    }
    for name, value in optional.items():
        if value is not None:
            fields[name] = repr(value) if isinstance(value, float) else value
    return fields


class RedisClients:
    """A sync client and one asyncio client per event loop (asyncio connections belong to
    the loop that made them) for one URL, every call bounded by `timeout`, `retries`
    reconnects. Shared by RedisKeyStore, RedisReplayCache and RedisIntrospectionCache."""

    def __init__(self, url: str, timeout: float, retries: int) -> None:
        self._url = url
        self._timeout = timeout
        self._retries = retries
        self.sync = redis.Redis.from_url(url, **self._options(Retry(NoBackoff(), retries)))
        self._async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aioredis.Redis] = (
            weakref.WeakKeyDictionary()
        )

    def _options(self, retry: Any) -> dict[str, Any]:
        return {
            "socket_timeout": self._timeout,
            "socket_connect_timeout": self._timeout,
            "retry": retry,
            "decode_responses": False,
        }

    def for_loop(self) -> aioredis.Redis:
        """The running event loop's client."""
        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            retry = AsyncRetry(NoBackoff(), self._retries)
            client = aioredis.Redis.from_url(self._url, **self._options(retry))
            self._async[loop] = client
        return client

    def close(self) -> None:
        """Close the sync client's connections (async clients close with their loops)."""
        self.sync.close()

    async def aclose(self) -> None:
        """Close this event loop's async client."""
        client = self._async.pop(asyncio.get_running_loop(), None)
        if client is not None:
            closer = getattr(client, "aclose", None)  # redis-py 5.0.0 has only `close`
            await (closer() if closer is not None else client.close())


class RedisKeyStore(KeyStore):
    """API keys in Redis, shared by every process and host that reaches it.

    ```python
    store = RedisKeyStore("redis://redis.internal:6379/0")
    app = AuthMiddleware(app, authenticators=[APIKeyAuth(store)])
    ```

    Layout, under `namespace` (a Redis Cluster hash tag, so one slot holds it all):
    `{ns}:key:<id>` is a hash per key (keyed hashes only, never a plaintext),
    `{ns}:index` a sorted set of ids by creation time (`list` pages through it), and
    `{ns}:hash_key` the HMAC key, created once with `SET NX` unless `hash_key=` or
    `AUTHGATE_HASH_KEY` (hex) gives one. Keeping it out of Redis means a copy of the
    data alone cannot be used to test guesses.

    Creation is one Lua script; rotation and revocation are optimistic transactions
    (`WATCH`/`MULTI`/`EXEC`, retried when another writer got there first), so racing
    writers never lose an update. Lookups use redis-py's sync client under WSGI and its
    asyncio client (one per event loop) under ASGI; every call is bounded by `timeout`
    (connect and socket time-outs, with one reconnect for a connection Redis dropped).
    `store_timeout` of `APIKeyAuth` (2 s by default) bounds a lookup as a whole, and a
    failure or time-out is a 503 with `Retry-After`.
    """

    local = False

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "authgate",
        timeout: float = 0.5,
        hash_key: bytes | None = None,
        page_size: int = 500,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError("namespace must be non-empty and free of braces")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if hash_key is None and os.environ.get(HASH_KEY_ENV):
            hash_key = bytes.fromhex(os.environ[HASH_KEY_ENV])
        self._url = url
        self.namespace = namespace
        self.timeout = timeout
        self.page_size = page_size
        self._hash_key = hash_key
        tag = "{" + namespace + "}"
        self._key_prefix = f"{tag}:key:"
        self._index = f"{tag}:index"
        self._hash_key_name = f"{tag}:hash_key"
        self._redis = RedisClients(url, timeout, retries=1)
        self._client = self._redis.sync
        self._insert_script = self._client.register_script(_INSERT)

    def __repr__(self) -> str:
        return f"RedisKeyStore({redact_url(self._url)!r}, namespace={self.namespace!r})"

    @property
    def url(self) -> str:
        """The URL, its password masked."""
        return redact_url(self._url)

    def _aclient(self) -> aioredis.Redis:
        return self._redis.for_loop()

    def _rkey(self, key_id: str) -> str:
        return self._key_prefix + key_id

    # -- the hash key ---------------------------------------------------------------------

    def _new_hash_key(self) -> bytes:
        return secrets.token_bytes(32)

    @property
    def hash_key(self) -> bytes:
        if self._hash_key is None:
            # SET NX: of several processes starting together, the first one's key stays.
            self._client.set(self._hash_key_name, self._new_hash_key(), nx=True)
            value = self._client.get(self._hash_key_name)
            self._hash_key = self._checked_hash_key(value)
        return self._hash_key

    async def _ahash_key(self) -> bytes:
        if self._hash_key is None:
            client = self._aclient()
            await client.set(self._hash_key_name, self._new_hash_key(), nx=True)
            value = await client.get(self._hash_key_name)
            self._hash_key = self._checked_hash_key(value)
        return self._hash_key

    def _checked_hash_key(self, value: Any) -> bytes:
        if not isinstance(value, bytes) or len(value) < 16:
            raise RuntimeError(f"{self._hash_key_name} in Redis is not a hash key")
        return value

    # -- reads ----------------------------------------------------------------------------

    def get(self, key_id: str) -> KeyRecord | None:
        self.hash_key  # noqa: B018 - `APIKeyAuth` compares right after, without I/O
        fields = self._client.hgetall(self._rkey(key_id))
        return _fields_to_record(key_id, fields) if fields else None

    async def aget(self, key_id: str) -> KeyRecord | None:
        await self._ahash_key()
        fields = await self._aclient().hgetall(self._rkey(key_id))
        return _fields_to_record(key_id, fields) if fields else None

    def _page(self, key_ids: list[str]) -> list[KeyRecord]:
        """The records of one page of ids, in one round trip."""
        pipe = self._client.pipeline(transaction=False)
        for key_id in key_ids:
            pipe.hgetall(self._rkey(key_id))
        return [
            _fields_to_record(key_id, fields)
            for key_id, fields in zip(key_ids, pipe.execute(), strict=True)
            if fields
        ]

    def iter_records(self, page_size: int | None = None) -> Iterator[KeyRecord]:
        """Every record, oldest first, fetched `page_size` at a time: memory stays bounded
        however many keys there are. Keys created meanwhile come last (they are newest);
        one stamped earlier by a host whose clock lags shifts the pages by one, and the
        record that shift would show twice is skipped (ids of the page before are kept)."""
        size = page_size or self.page_size
        start = 0
        previous: set[str] = set()
        while True:
            raw = self._client.zrange(self._index, start, start + size - 1)
            if not raw:
                return
            ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw]
            yield from self._page([i for i in ids if i not in previous])
            if len(ids) < size:
                return
            previous = set(ids)
            start += size

    def list(self) -> list[KeyRecord]:
        return list(self.iter_records())

    def count(self) -> int:
        """How many keys the store holds."""
        return int(self._client.zcard(self._index))

    # -- writes ---------------------------------------------------------------------------

    def _insert(self, record: KeyRecord) -> bool:
        args: list[Any] = [repr(record.created_at), record.key_id]
        for name, value in _record_to_fields(record).items():
            args += [name, value]
        done = self._insert_script(keys=[self._rkey(record.key_id), self._index], args=args)
        return bool(done)

    def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        rkey = self._rkey(key_id)
        with self._client.pipeline(transaction=True) as pipe:
            for _ in range(_WRITE_ATTEMPTS):
                try:
                    pipe.watch(rkey)  # type: ignore[no-untyped-call]
                    fields = pipe.hgetall(rkey)
                    if not fields:
                        pipe.unwatch()
                        return None
                    new = change(_fields_to_record(key_id, fields))
                    pipe.multi()
                    pipe.delete(rkey)
                    pipe.hset(rkey, mapping=_record_to_fields(new))  # type: ignore[arg-type]
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue  # another writer changed the key: read it again
                finally:
                    pipe.reset()
        raise RuntimeError(f"key {key_id} kept changing under a write; try again")

    def close(self) -> None:
        """Close the sync client's connections (async clients close with their loops)."""
        self._redis.close()

    async def aclose(self) -> None:
        """Close this event loop's async client."""
        await self._redis.aclose()

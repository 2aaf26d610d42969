"""A key store in Redis (or Valkey): one store for a fleet of servers. Extra "redis"."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import threading
import time
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

logger = logging.getLogger("asgi_auth")

HASH_KEY_ENV = "AUTHGATE_HASH_KEY"
#: Writers that lose a race (WATCH) try again this many times before giving up.
_WRITE_ATTEMPTS = 64
#: A lost subscription is retried after this long, doubling up to the maximum.
_RESUBSCRIBE_MIN = 0.05
_RESUBSCRIBE_MAX = 2.0
#: How long reconciliation waits for announcements already on their way before it
#: concludes that some were lost.
_IN_FLIGHT_WAIT = 0.05

# Announce a change: bump the store's change counter and publish "<counter> <key id>",
# so that a subscriber that sees a gap in the counter knows it missed something.
_ANNOUNCE = """
local version = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], version .. ' ' .. ARGV[2])
return version
"""

# Insert a record if its id is free, index it and announce it, in one step.
_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('ZADD', KEYS[2], ARGV[1], ARGV[2])
local version = redis.call('INCR', KEYS[3])
redis.call('PUBLISH', ARGV[3], version .. ' ' .. ARGV[2])
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
    writers never lose an update.

    Every write also bumps `{ns}:version` and publishes `"<version> <key id>"` on
    `{ns}:changes`, in the same atomic step, after the record. A process whose
    `APIKeyAuth` caches keys from this store subscribes (one daemon thread per store,
    started at its first lookup, again after a fork) and drops the key from every cache
    on each message, so a revocation or rotation reaches the fleet in milliseconds:

    - A lost subscription is retried with backoff; cached keys keep serving meanwhile.
      Once subscribed again (and on the first subscription), every cached key is
      dropped: messages may have been missed.
    - Every `reconcile_interval` seconds the thread reads `{ns}:version`; a gap between
      it (or a message's version) and the messages seen means some were lost, and every
      cached key is dropped. So even a silently lost message is bounded by about
      `reconcile_interval`, and `cache_ttl` remains the last backstop.
    - `listen=False` turns this off (revocation then waits for `cache_ttl`).

    Lookups use redis-py's sync client under WSGI and its
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
        listen: bool = True,
        reconcile_interval: float = 1.0,
    ) -> None:
        if not namespace or any(c in namespace for c in "{}"):
            raise ValueError("namespace must be non-empty and free of braces")
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        if page_size < 1:
            raise ValueError("page_size must be >= 1")
        if reconcile_interval <= 0:
            raise ValueError("reconcile_interval must be > 0")
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
        self._version_key = f"{tag}:version"
        self.channel = f"{tag}:changes"
        self._redis = RedisClients(url, timeout, retries=1)
        self._client = self._redis.sync
        self._insert_script = self._client.register_script(_INSERT)
        self._announce_script = self._client.register_script(_ANNOUNCE)
        self.listening = listen
        self.reconcile_interval = reconcile_interval
        #: Set while this process is subscribed to changes (for tests and health checks).
        self.subscribed = threading.Event()
        self._listener_pid: int | None = None
        self._first_subscription = threading.Event()
        #: A lookup read Redis before this process's first subscription (it timed out):
        #: what it cached may miss an announcement, so the subscription drops it.
        self._read_unsubscribed = False
        self._listener_stop = threading.Event()
        self._listener_thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._seen_version: int | None = None

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
        pending = not self._following and self._start_listening()
        if pending and not self._first_subscription.wait(self.timeout):
            self._read_unsubscribed = True
        self.hash_key  # noqa: B018 - `APIKeyAuth` compares right after, without I/O
        fields = self._client.hgetall(self._rkey(key_id))
        return _fields_to_record(key_id, fields) if fields else None

    async def aget(self, key_id: str) -> KeyRecord | None:
        pending = not self._following and self._start_listening()
        if pending and not await asyncio.to_thread(self._first_subscription.wait, self.timeout):
            self._read_unsubscribed = True
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
        args: list[Any] = [repr(record.created_at), record.key_id, self.channel]
        for name, value in _record_to_fields(record).items():
            args += [name, value]
        keys = [self._rkey(record.key_id), self._index, self._version_key]
        return bool(self._insert_script(keys=keys, args=args))

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
                    self._announce_script(
                        keys=[self._version_key], args=[self.channel, key_id], client=pipe
                    )
                    pipe.execute()
                    return new
                except redis.WatchError:
                    continue  # another writer changed the key: read it again
                finally:
                    pipe.reset()
        raise RuntimeError(f"key {key_id} kept changing under a write; try again")

    # -- change announcements -------------------------------------------------------------

    @property
    def _following(self) -> bool:
        """This process follows announcements (or needs not: nothing listens)."""
        return self._listener_pid == os.getpid() and self._first_subscription.is_set()

    def _start_listening(self) -> bool:
        """Start this process's subscriber thread, once (and again in a forked child:
        threads do not survive a fork), if anything listens and listening is on. True
        while its first subscription is pending: lookups wait for it (at most
        `timeout`), so that what they read needs no dropping once it is in place; one
        that reads without it marks the subscription to drop everything."""
        if not self.listening or not self._listeners():
            return False
        with self._start_lock:
            pid = os.getpid()
            if self._listener_pid == pid:
                return not self._first_subscription.is_set()
            self._listener_pid = pid
            self._first_subscription.clear()
            self._read_unsubscribed = False
            self._listener_stop = stop = threading.Event()
            self.subscribed.clear()
            self._listener_thread = threading.Thread(
                target=self._listen,
                args=(stop,),
                name=f"authgate-key-changes-{self.namespace}",
                daemon=True,  # never holds up interpreter exit
            )
            self._listener_thread.start()
            return True

    def _listen(self, stop: threading.Event) -> None:
        # Its own client, with no silent reconnects: redis-py would re-subscribe behind
        # our back, and the messages published meanwhile would be lost unnoticed.
        client = redis.Redis.from_url(
            self._url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),
            decode_responses=False,
        )
        backoff = _RESUBSCRIBE_MIN
        lost = False
        try:
            while not stop.is_set():
                pubsub = client.pubsub()
                try:
                    self._subscribe(pubsub, stop)
                    # Changes before this point may have been missed: on the first
                    # subscription, by lookups that raced it; after a loss, while it lasted.
                    self._seen_version = self._read_version(client)
                    if lost:
                        logger.warning(
                            "key store %s: change subscription restored; cached keys dropped",
                            self.url,
                        )
                        lost = False
                    first = not self._first_subscription.is_set()
                    drop = lost or not first or self._read_unsubscribed
                    self.subscribed.set()
                    self._first_subscription.set()
                    if drop:
                        self._notify(None)
                    backoff = _RESUBSCRIBE_MIN
                    self._follow(client, pubsub, stop)
                except (redis.RedisError, OSError) as exc:
                    self.subscribed.clear()
                    if not lost:
                        lost = True
                        logger.warning(
                            "key store %s: change subscription lost (%s); cached keys keep "
                            "serving until their TTL, resubscribing",
                            self.url,
                            type(exc).__name__,
                        )
                finally:
                    self.subscribed.clear()
                    pubsub.close()
                stop.wait(backoff)
                backoff = min(backoff * 2, _RESUBSCRIBE_MAX)
        finally:
            client.close()

    def _subscribe(self, pubsub: Any, stop: threading.Event) -> None:
        pubsub.subscribe(self.channel)
        deadline = time.monotonic() + self.timeout
        while not stop.is_set():
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message["type"] == "subscribe":
                return
            if time.monotonic() >= deadline:
                raise redis.TimeoutError("no confirmation of SUBSCRIBE")

    def _read_version(self, client: redis.Redis) -> int:
        value = client.get(self._version_key)
        return int(value) if value is not None else 0

    def _follow(self, client: redis.Redis, pubsub: Any, stop: threading.Event) -> None:
        """Apply messages as they come; reconcile with `{ns}:version` every interval."""
        next_check = time.monotonic() + self.reconcile_interval
        while not stop.is_set():
            wait = min(max(0.0, next_check - time.monotonic()), 1.0)
            message = pubsub.get_message(timeout=wait)
            if message is not None:
                self._on_message(message)
            if time.monotonic() >= next_check:
                self._reconcile(client, pubsub)
                next_check = time.monotonic() + self.reconcile_interval

    def _on_message(self, message: Mapping[str, Any]) -> None:
        if message.get("type") != "message":
            return
        try:
            raw_version, key_id = bytes(message["data"]).decode().split(" ", 1)
            version = int(raw_version)
        except (TypeError, ValueError):
            self._notify(None)  # unreadable: assume the worst
            return
        seen = self._seen_version
        if seen is not None and version > seen + 1:
            self._notify(None)  # a gap: some announcements never arrived
        else:
            self._notify(key_id)
        if seen is None or version > seen:
            self._seen_version = version

    def _reconcile(self, client: redis.Redis, pubsub: Any) -> None:
        version = self._read_version(client)
        if version == self._seen_version:
            return
        # Announcements published before the read may still be on their way.
        message = pubsub.get_message(timeout=_IN_FLIGHT_WAIT)
        while message is not None:
            self._on_message(message)
            message = pubsub.get_message(timeout=_IN_FLIGHT_WAIT)
        seen = self._seen_version
        if seen is None or version > seen or version < seen:  # lost, or Redis lost its data
            logger.warning(
                "key store %s: %s change announcement(s) missed; cached keys dropped",
                self.url,
                "some" if seen is None or version < seen else version - seen,
            )
            self._seen_version = version
            self._notify(None)

    def stop_listening(self) -> None:
        """Stop the subscriber thread (`close` does it too)."""
        self._listener_stop.set()
        thread = self._listener_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 2.0)
        self._listener_thread = None
        self._listener_pid = None

    def close(self) -> None:
        """Stop listening and close the sync client's connections (async clients close
        with their loops)."""
        self.stop_listening()
        self._redis.close()

    async def aclose(self) -> None:
        """Close this event loop's async client."""
        await self._redis.aclose()

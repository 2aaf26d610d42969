"""Key records and the interface every key store implements."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from .format import (
    DEFAULT_PREFIX,
    assemble,
    check_prefix,
    hash_secret,
    new_key_id,
    new_secret,
    parse,
)

logger = logging.getLogger("asgi_auth")

#: What a store calls when keys change: with a key id, or None for "anything may have".
Listener = Callable[[str | None], None]
_LISTENERS_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What a store keeps for one API key. Never the plaintext, and hashes stay out of repr."""

    key_id: str
    name: str
    scopes: frozenset[str]
    secret_hash: bytes = field(repr=False)
    #: The prefix the key was issued with. `APIKeyAuth` refuses the key under any other:
    #: the checksum is no MAC, so anyone can re-spell a `test_` key as `live_`.
    prefix: str = DEFAULT_PREFIX
    subject: str | None = None
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    #: After a rotation the old secret stays valid until `previous_expires_at`.
    previous_hash: bytes | None = field(default=None, repr=False)
    previous_expires_at: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    def status(self, now: float) -> str:
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def public_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data, without any hash."""
        return {
            "id": self.key_id,
            "name": self.name,
            "prefix": self.prefix,
            "subject": self.subject,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "previous_expires_at": self.previous_expires_at,
            "metadata": dict(self.metadata),
        }


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A freshly created or rotated key: the only time the plaintext exists."""

    key: str = field(repr=False)
    record: KeyRecord


class KeyStore(ABC):
    """Where API keys live. `get`/`aget` are the only calls on the request path.

    Stores hash secrets with `hash_key` (HMAC-SHA256). Subclasses implement storage:
    `get`, `aget`, `list`, `_insert` and `_update`; creation, rotation and revocation are
    written once here.
    """

    clock: Callable[[], float] = staticmethod(time.time)
    #: True for stores whose `get` never waits on a network (memory, a local file):
    #: `APIKeyAuth` then calls it directly, without the I/O driver's single flight,
    #: time-out and, under asyncio, event-loop turns (about half of a cache miss).
    local: bool = False

    # -- change notification --------------------------------------------------------------

    def listen(self, listener: Listener) -> None:
        """Call `listener(key_id)` after a key is created, rotated or revoked through this
        store, or `listener(None)` when any cached key may be out of date. Held weakly
        (a bound method lives as long as its object), so it never keeps a cache alive.
        Stores shared by several processes also deliver other processes' writes."""
        ref: weakref.ref[Any] = (
            weakref.WeakMethod(listener) if hasattr(listener, "__self__") else weakref.ref(listener)
        )
        with _LISTENERS_LOCK:
            refs: list[weakref.ref[Any]] = self.__dict__.setdefault("_listener_refs", [])
            refs[:] = [r for r in refs if r() is not None]
            refs.append(ref)

    def _listeners(self) -> list[Listener]:
        refs = self.__dict__.get("_listener_refs", ())
        return [fn for fn in (r() for r in list(refs)) if fn is not None]

    def _notify(self, key_id: str | None) -> None:
        """Tell this process's listeners that `key_id` (None: any key) changed. A failing
        listener is logged and the others still run."""
        for fn in self._listeners():
            try:
                fn(key_id)
            except Exception:  # one broken cache must not leave the others stale
                logger.exception("key store listener failed: key_id=%s", key_id)

    def _changed(self, key_id: str) -> None:
        """A write through this store committed. Stores shared by several processes also
        publish it (see `RedisKeyStore`); this process's caches learn of it at once."""
        self._notify(key_id)

    @property
    @abstractmethod
    def hash_key(self) -> bytes:
        """The secret key of the keyed hash. Never logged, never in a repr."""

    @abstractmethod
    def get(self, key_id: str) -> KeyRecord | None:
        """The record for `key_id`, or None."""

    async def aget(self, key_id: str) -> KeyRecord | None:
        """Async `get`. Stores with a truly async client override it."""
        return self.get(key_id)

    @abstractmethod
    def list(self) -> list[KeyRecord]:
        """Every record, oldest first."""

    @abstractmethod
    def _insert(self, record: KeyRecord) -> bool:
        """Add `record`; False if its id is taken."""

    @abstractmethod
    def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        """Atomically replace a record with `change(record)`; None if there is none."""

    def create(
        self,
        name: str,
        scopes: Iterable[str] = (),
        *,
        expires_at: float | None = None,
        subject: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        metadata: Mapping[str, Any] | None = None,
    ) -> IssuedKey:
        """Create a key. The returned `IssuedKey.key` is the only copy of the plaintext."""
        check_prefix(prefix)
        if not name:
            raise ValueError("a key needs a name")
        for _ in range(8):
            key_id, secret = new_key_id(), new_secret()
            record = KeyRecord(
                key_id=key_id,
                name=name,
                scopes=frozenset(scopes),
                secret_hash=hash_secret(self.hash_key, key_id, secret),
                prefix=prefix,
                subject=subject,
                created_at=self.clock(),
                expires_at=expires_at,
                metadata=MappingProxyType(dict(metadata or {})),
            )
            if self._insert(record):
                self._changed(key_id)
                return IssuedKey(assemble(prefix, key_id, secret), record)
        raise RuntimeError("could not allocate a unique key id")  # pragma: no cover

    def add(
        self,
        key: str,
        name: str,
        scopes: Iterable[str] = (),
        *,
        expires_at: float | None = None,
        subject: str | None = None,
    ) -> KeyRecord:
        """Store an existing plaintext key (e.g. one from configuration) by its hash."""
        try:
            prefix, key_id, secret = parse(key)
        except ValueError:
            raise ValueError("not a well-formed API key") from None
        record = KeyRecord(
            key_id=key_id,
            name=name,
            scopes=frozenset(scopes),
            secret_hash=hash_secret(self.hash_key, key_id, secret),
            prefix=prefix,
            subject=subject,
            created_at=self.clock(),
            expires_at=expires_at,
        )
        if not self._insert(record):
            raise ValueError(f"key id {key_id} already exists")
        self._changed(key_id)
        return record

    def revoke(self, key_id: str) -> KeyRecord | None:
        """Revoke a key now; None if unknown. Authenticators listening to this store drop
        it at once (other processes: see the store); others within their cache TTL."""
        now = self.clock()
        record = self._update(key_id, lambda r: r if r.revoked_at else replace(r, revoked_at=now))
        if record is not None:
            self._changed(key_id)
        return record

    def rotate(self, key_id: str, *, grace: float = 86400.0) -> IssuedKey | None:
        """Give a key a new secret; the old one stays valid for `grace` seconds."""
        if grace < 0:
            raise ValueError("grace must be >= 0")
        secret = new_secret()
        now = self.clock()

        def change(r: KeyRecord) -> KeyRecord:
            if r.status(now) != "active":
                raise ValueError(f"key {key_id} is {r.status(now)}")
            return replace(
                r,
                secret_hash=hash_secret(self.hash_key, key_id, secret),
                previous_hash=r.secret_hash if grace else None,
                previous_expires_at=now + grace if grace else None,
            )

        record = self._update(key_id, change)
        if record is None:
            return None
        self._changed(key_id)
        return IssuedKey(assemble(record.prefix, key_id, secret), record)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

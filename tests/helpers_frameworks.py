"""Shared pieces for the framework tests: key stores that count or fail, ASGI plumbing."""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from collections.abc import Iterable
from typing import Any

from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.base import KeyRecord

MIB = 1 << 20


def big_body(size: int = MIB, seed: int = 7) -> bytes:
    """Deterministic pseudo-random bytes: every byte value occurs, nothing compresses."""
    return random.Random(seed).randbytes(size)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CountingStore(MemoryKeyStore):
    """A memory store that counts lookups (sync and async), from any thread."""

    local = False  # stands in for a networked store: lookups go through the driver

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self._count_lock = threading.Lock()

    def get(self, key_id: str) -> KeyRecord | None:
        with self._count_lock:
            self.lookups += 1
        return super().get(key_id)


class GatedStore(CountingStore):
    """Lookups block until `release` is set (bounded), so concurrent requests overlap."""

    def __init__(self, *, max_wait: float = 10.0) -> None:
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()
        self.max_wait = max_wait

    def get(self, key_id: str) -> KeyRecord | None:
        self.entered.set()
        self.release.wait(self.max_wait)  # bounded: a bug cannot hang the suite
        return super().get(key_id)


class AsyncGatedStore(CountingStore):
    """`aget` really suspends, on whatever loop runs it, until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release: asyncio.Event | None = None

    async def aget(self, key_id: str) -> KeyRecord | None:
        record = self.get(key_id)
        if self.release is not None:
            await self.release.wait()
        else:
            await asyncio.sleep(0)  # a real suspension point, not a timing device
        return record


class BrokenStore(MemoryKeyStore):
    """A key store whose backend is down: every lookup raises."""

    def get(self, key_id: str) -> KeyRecord | None:
        raise ConnectionError("key store is down")


def ws_scope(
    path: str = "/ws",
    headers: Iterable[tuple[bytes, bytes]] = (),
    extensions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A WebSocket scope as a server without the denial-response extension builds it."""
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "ws",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "subprotocols": [],
        "state": {},
    }
    if extensions is not None:
        scope["extensions"] = extensions
    return scope


class ASGIRecorder:
    """`receive`/`send` for calling an ASGI app directly: scripted input, captured output."""

    def __init__(self, incoming: Iterable[dict[str, Any]]) -> None:
        self.incoming = list(incoming)
        self.sent: list[dict[str, Any]] = []

    async def receive(self) -> dict[str, Any]:
        if self.incoming:
            return self.incoming.pop(0)
        return {"type": "websocket.disconnect", "code": 1000}

    async def send(self, message: Any) -> None:
        self.sent.append(dict(message))

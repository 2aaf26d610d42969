"""Key stores with many real API keys, built fast for the scale benchmarks.

`store.create()` costs a `secrets.choice` per character and one transaction per key:
minutes for a million keys. Here keys come from a seeded generator (so a subprocess can
make the same plaintexts again without storing them), are hashed with the store's own
`hash_secret`, and go in with one `executemany`. The keys are real: same format, same
checksum, same keyed hash; a check before any timing sends sampled ones through
`APIKeyAuth` and expects 200s.
"""

from __future__ import annotations

import gc
import hashlib
import random
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from asgi_auth.keys import MemoryKeyStore, SQLiteKeyStore
from asgi_auth.keys.base import KeyRecord
from asgi_auth.keys.format import (
    ALPHABET,
    DEFAULT_PREFIX,
    ID_LEN,
    SECRET_LEN,
    assemble,
    hash_secret,
)

NAME = "bench"
SCOPES = frozenset({"items:read"})
_NO_METADATA: MappingProxyType[str, object] = MappingProxyType({})
# Random bytes to base62 with one C call (`bytes.translate`); the slight bias of `% 62`
# does not matter for a benchmark, and the result is still a well-formed key.
_TO_BASE62 = bytes(ord(ALPHABET[i % len(ALPHABET)]) for i in range(256))
_BODY = ID_LEN + SECRET_LEN


@contextmanager
def no_gc() -> Iterator[None]:
    """Collections off while a million objects are made: nothing here is garbage, and
    the collector would otherwise walk the growing heap again and again."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def hash_key(seed: int) -> bytes:
    """The stores' HMAC key, derived from the seed so every process agrees on it."""
    return hashlib.sha256(f"authgate-bench-{seed}".encode()).digest()


def key_parts(seed: int, n: int) -> Iterator[tuple[str, str]]:
    """`(key_id, secret)` for keys 0..n-1 of the sequence `seed` names."""
    rng = random.Random(seed)
    for _ in range(n):
        body = rng.randbytes(_BODY).translate(_TO_BASE62).decode("ascii")
        yield body[:ID_LEN], body[ID_LEN:]


def plaintexts(seed: int, n: int) -> Iterator[str]:
    """The keys themselves (valid in a store built from the same seed)."""
    for key_id, secret in key_parts(seed, n):
        yield assemble(DEFAULT_PREFIX, key_id, secret)


def sample_indices(n: int, pool: int) -> list[int]:
    """`min(n, pool)` indices spread evenly over 0..n-1 (so lookups touch the whole store)."""
    k = min(n, pool)
    return [i * n // k for i in range(k)]


@dataclass
class KeyBatch:
    """Keys 0..n-1 of one sequence: ids and keyed hashes (shared by every store built
    from it), and for each store size asked for, the plaintexts of a spread sample."""

    seed: int
    hash_key: bytes
    ids: list[str]
    hashes: list[bytes]
    samples: dict[int, list[str]]
    build_s: float


def key_batch(seed: int, counts: Iterable[int], pool: int) -> KeyBatch:
    """Make keys for the largest of `counts`; sample `pool` of each size's keys."""
    t0 = time.perf_counter()
    counts = sorted(set(counts))
    hk = hash_key(seed)
    wanted: dict[int, list[int]] = {}
    for n in counts:
        for i in sample_indices(n, pool):
            wanted.setdefault(i, []).append(n)
    samples: dict[int, list[str]] = {n: [] for n in counts}
    ids: list[str] = []
    hashes: list[bytes] = []
    with no_gc():
        for i, (key_id, secret) in enumerate(key_parts(seed, counts[-1])):
            ids.append(key_id)
            hashes.append(hash_secret(hk, key_id, secret))
            for n in wanted.get(i, ()):
                samples[n].append(assemble(DEFAULT_PREFIX, key_id, secret))
    return KeyBatch(seed, hk, ids, hashes, samples, time.perf_counter() - t0)


def memory_stores(batch: KeyBatch) -> dict[int, MemoryKeyStore]:
    """One `MemoryKeyStore` per size, holding the batch's first n keys; records go in
    through `_insert` and are shared between the stores."""
    now = time.time()
    stores = {n: MemoryKeyStore(hash_key=batch.hash_key) for n in batch.samples}
    sizes = sorted(stores)
    with no_gc():
        for i, (key_id, digest) in enumerate(zip(batch.ids, batch.hashes, strict=True)):
            record = KeyRecord(
                key_id=key_id,
                name=NAME,
                scopes=SCOPES,
                secret_hash=digest,
                created_at=now,
                metadata=_NO_METADATA,
            )
            for n in sizes:
                if i < n and not stores[n]._insert(record):
                    raise RuntimeError(f"duplicate key id in the bench sequence ({batch.seed})")
    return stores


def sqlite_file(path: Path, batch: KeyBatch, n: int) -> None:
    """Write the batch's first n keys into a new SQLite key store at `path`.

    The schema comes from `SQLiteKeyStore` itself; the rows go in sorted by id in one
    transaction without a journal (a scratch file: durability does not matter here),
    and the file is left in WAL mode, as the store keeps it.
    """
    schema = SQLiteKeyStore(path, hash_key=batch.hash_key)
    schema._conn()  # creates the tables
    schema.close()
    now = time.time()
    scopes = " ".join(sorted(SCOPES))
    with no_gc():
        rows = sorted(
            (key_id, DEFAULT_PREFIX, NAME, scopes, digest, now)
            for key_id, digest in zip(batch.ids[:n], batch.hashes[:n], strict=True)
        )
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = OFF")
        conn.execute("PRAGMA synchronous = OFF")
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO authgate_keys (id, prefix, name, scopes, secret_hash, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode = WAL")
    finally:
        conn.close()

"""An in-process key store: tests, and keys that come from configuration."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable

from .base import KeyRecord, KeyStore


class MemoryKeyStore(KeyStore):
    """Keys held in a dict. Thread-safe; lost when the process ends.

    ```python
    store = MemoryKeyStore()
    issued = store.create("ci", scopes=["deploy"])
    store.add(os.environ["PARTNER_KEY"], "partner", scopes=["read"])
    ```
    """

    local = True

    def __init__(self, *, hash_key: bytes | None = None) -> None:
        self._hash_key = hash_key or secrets.token_bytes(32)
        self._records: dict[str, KeyRecord] = {}
        self._lock = threading.Lock()

    @property
    def hash_key(self) -> bytes:
        return self._hash_key

    def get(self, key_id: str) -> KeyRecord | None:
        return self._records.get(key_id)

    def list(self) -> list[KeyRecord]:
        with self._lock:
            return sorted(self._records.values(), key=lambda r: r.created_at)

    def _insert(self, record: KeyRecord) -> bool:
        with self._lock:
            if record.key_id in self._records:
                return False
            self._records[record.key_id] = record
            return True

    def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        with self._lock:
            record = self._records.get(key_id)
            if record is None:
                return None
            self._records[key_id] = new = change(record)
            return new

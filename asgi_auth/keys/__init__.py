"""Key stores for `APIKeyAuth`: in memory, and SQLite for one host."""

from .base import IssuedKey, KeyRecord, KeyStore
from .format import DEFAULT_PREFIX
from .memory import MemoryKeyStore
from .sqlite import SQLiteKeyStore

__all__ = [
    "DEFAULT_PREFIX",
    "IssuedKey",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "SQLiteKeyStore",
]

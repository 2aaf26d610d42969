"""Key stores for `APIKeyAuth`. `RedisKeyStore` comes with the `redis` extra."""

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

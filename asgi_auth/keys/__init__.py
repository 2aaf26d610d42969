"""Key stores for `APIKeyAuth`: in memory, SQLite for one host, Redis for a fleet.

`RedisKeyStore` needs the "redis" extra (`pip install 'authgate[redis]'`); it is loaded
on first use, so the core imports without redis-py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import IssuedKey, KeyRecord, KeyStore
from .format import DEFAULT_PREFIX
from .memory import MemoryKeyStore
from .sqlite import SQLiteKeyStore

if TYPE_CHECKING:
    from .redis import RedisKeyStore as RedisKeyStore

__all__ = [
    "DEFAULT_PREFIX",
    "IssuedKey",
    "KeyRecord",
    "KeyStore",
    "MemoryKeyStore",
    "SQLiteKeyStore",
]


def __getattr__(name: str) -> Any:
    if name == "RedisKeyStore":
        # Raises ImportError naming `pip install 'authgate[redis]'` without redis-py.
        from .redis import RedisKeyStore

        return RedisKeyStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

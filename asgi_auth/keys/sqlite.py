"""A key store in one SQLite file: embedded, durable, shared by several processes."""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .base import KeyRecord, KeyStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS authgate_meta (
    name  TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS authgate_keys (
    id                  TEXT PRIMARY KEY,
    prefix              TEXT NOT NULL,
    name                TEXT NOT NULL,
    subject             TEXT,
    scopes              TEXT NOT NULL,
    secret_hash         BLOB NOT NULL,
    previous_hash       BLOB,
    previous_expires_at REAL,
    created_at          REAL NOT NULL,
    expires_at          REAL,
    revoked_at          REAL,
    metadata            TEXT NOT NULL DEFAULT '{}'
);
"""
_COLUMNS = (
    "id, prefix, name, subject, scopes, secret_hash, previous_hash, previous_expires_at, "
    "created_at, expires_at, revoked_at, metadata"
)
HASH_KEY_ENV = "AUTHGATE_HASH_KEY"


def _row_to_record(row: tuple[Any, ...]) -> KeyRecord:
    return KeyRecord(
        key_id=row[0],
        prefix=row[1],
        name=row[2],
        subject=row[3],
        scopes=frozenset(row[4].split()),
        secret_hash=bytes(row[5]),
        previous_hash=None if row[6] is None else bytes(row[6]),
        previous_expires_at=row[7],
        created_at=row[8],
        expires_at=row[9],
        revoked_at=row[10],
        metadata=MappingProxyType(json.loads(row[11])),
    )


def _record_to_row(r: KeyRecord) -> tuple[Any, ...]:
    return (
        r.key_id,
        r.prefix,
        r.name,
        r.subject,
        " ".join(sorted(r.scopes)),
        r.secret_hash,
        r.previous_hash,
        r.previous_expires_at,
        r.created_at,
        r.expires_at,
        r.revoked_at,
        json.dumps(dict(r.metadata), sort_keys=True),
    )


_BUSY_SECONDS = 10.0


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL, waiting out other processes doing the same.

    The switch needs the file to itself, and SQLite refuses it ("database is locked", or
    by answering the old mode) at once, without its busy handler, while another
    connection holds a lock: workers of one server opening a new file together hit it."""
    deadline = time.monotonic() + _BUSY_SECONDS
    while True:
        try:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
            if mode != "wal":
                mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            mode = None
        if mode == "wal":
            return
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("database is locked: could not switch it to WAL")
        time.sleep(0.005 + secrets.randbelow(20) / 1000)  # jitter: the other openers retry too


class SQLiteKeyStore(KeyStore):
    """API keys in a SQLite file (stdlib `sqlite3`, WAL mode).

    Safe for several processes and threads reading and writing one file: every write is
    one `BEGIN IMMEDIATE` transaction, readers never block writers, and each thread (and
    each process after a fork) gets its own connection.

    The hash key comes from `hash_key=`, else the `AUTHGATE_HASH_KEY` environment
    variable (hex), else a random key kept in the database itself. Keeping it outside
    the file means a stolen copy of the file alone cannot be used to test guesses.
    Lookups are local and take microseconds, so `aget` runs them inline.
    """

    local = True

    def __init__(self, path: str | os.PathLike[str], *, hash_key: bytes | None = None) -> None:
        self.path = Path(path)
        if hash_key is None and os.environ.get(HASH_KEY_ENV):
            hash_key = bytes.fromhex(os.environ[HASH_KEY_ENV])
        self._hash_key = hash_key
        self._local = threading.local()
        self._init_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SQLiteKeyStore({str(self.path)!r})"

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.pid == os.getpid():
            return conn
        conn = sqlite3.connect(self.path, timeout=_BUSY_SECONDS, isolation_level=None)
        conn.execute(f"PRAGMA busy_timeout = {int(_BUSY_SECONDS * 1000)}")
        _use_wal(conn)
        # A key must survive a power cut once `create` has returned; writes are rare.
        conn.execute("PRAGMA synchronous = FULL")
        with self._init_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(
                    "INSERT OR IGNORE INTO authgate_meta(name, value) VALUES ('hash_key', ?)",
                    (secrets.token_bytes(32),),
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @property
    def hash_key(self) -> bytes:
        if self._hash_key is None:
            row = (
                self._conn()
                .execute("SELECT value FROM authgate_meta WHERE name = 'hash_key'")
                .fetchone()
            )
            self._hash_key = bytes(row[0])
        return self._hash_key

    def get(self, key_id: str) -> KeyRecord | None:
        row = (
            self._conn()
            .execute(
                f"SELECT {_COLUMNS} FROM authgate_keys WHERE id = ?",  # noqa: S608 - constant
                (key_id,),
            )
            .fetchone()
        )
        return None if row is None else _row_to_record(row)

    def list(self) -> list[KeyRecord]:
        rows = (
            self._conn()
            .execute(
                f"SELECT {_COLUMNS} FROM authgate_keys ORDER BY created_at, id"  # noqa: S608
            )
            .fetchall()
        )
        return [_row_to_record(r) for r in rows]

    def _insert(self, record: KeyRecord) -> bool:
        try:
            self._conn().execute(
                f"INSERT INTO authgate_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                _record_to_row(record),
            )
        except sqlite3.IntegrityError:
            return False
        return True

    def _update(self, key_id: str, change: Callable[[KeyRecord], KeyRecord]) -> KeyRecord | None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            record = self.get(key_id)
            if record is None:
                conn.execute("ROLLBACK")
                return None
            new = change(record)
            conn.execute(
                f"REPLACE INTO authgate_keys ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",  # noqa: S608
                _record_to_row(new),
            )
            conn.execute("COMMIT")
            return new
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close this thread's connection (others close when their threads end)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

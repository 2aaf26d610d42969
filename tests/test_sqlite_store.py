"""SQLiteKeyStore: durable, and safe with several processes writing one file."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

import pytest

from asgi_auth.keys import MemoryKeyStore, SQLiteKeyStore
from asgi_auth.keys.format import parse

WRITERS = 2
KEYS_PER_WRITER = 150


def _write_keys(db: str, tag: str, count: int, out: mp.Queue) -> None:  # type: ignore[type-arg]
    store = SQLiteKeyStore(db)
    issued = [store.create(f"{tag}-{i}", ["read"]).key for i in range(count)]
    out.put((tag, issued))


def test_two_processes_writing_one_file_lose_nothing(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [
        ctx.Process(target=_write_keys, args=(db, f"w{n}", KEYS_PER_WRITER, out))
        for n in range(WRITERS)
    ]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    store = SQLiteKeyStore(db)
    records = {r.key_id: r for r in store.list()}
    assert len(records) == WRITERS * KEYS_PER_WRITER
    # Every key each process was handed is stored whole and verifies.
    from asgi_auth.keys.format import hash_secret

    for tag, keys in results.items():
        assert len(keys) == KEYS_PER_WRITER
        for i, key in enumerate(keys):
            _, key_id, secret = parse(key)
            rec = records[key_id]
            assert rec.name == f"{tag}-{i}"
            assert rec.scopes == frozenset({"read"})
            assert rec.secret_hash == hash_secret(store.hash_key, key_id, secret)
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_reader_in_another_process_sees_every_committed_key(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    writer = SQLiteKeyStore(db)
    reader = SQLiteKeyStore(db)
    issued = writer.create("a", ["x"])
    assert reader.get(issued.record.key_id) == issued.record
    writer.revoke(issued.record.key_id)
    rec = reader.get(issued.record.key_id)
    assert rec is not None and rec.revoked_at is not None


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
def test_store_lifecycle(store_kind: str, tmp_path: Path) -> None:
    store = MemoryKeyStore() if store_kind == "memory" else SQLiteKeyStore(tmp_path / "k.db")
    issued = store.create("svc", ["a", "b"], subject="svc-1", metadata={"team": "x"})
    rec = store.get(issued.record.key_id)
    assert rec == issued.record
    assert rec is not None and rec.subject == "svc-1" and dict(rec.metadata) == {"team": "x"}
    assert store.get("nosuchkeyid0") is None

    rotated = store.rotate(rec.key_id, grace=60)
    assert rotated is not None and rotated.key != issued.key
    assert rotated.record.previous_hash == rec.secret_hash
    assert rotated.record.previous_expires_at is not None

    revoked = store.revoke(rec.key_id)
    assert revoked is not None and revoked.status(revoked.revoked_at or 0) == "revoked"
    with pytest.raises(ValueError, match="revoked"):
        store.rotate(rec.key_id)
    assert store.revoke("nosuchkeyid0") is None
    assert store.rotate("nosuchkeyid0") is None
    assert [r.key_id for r in store.list()] == [rec.key_id]


def test_add_existing_key_and_reject_garbage() -> None:
    source = MemoryKeyStore()
    key = source.create("x").key
    store = MemoryKeyStore()
    rec = store.add(key, "imported", ["read"])
    assert store.get(rec.key_id) == rec
    with pytest.raises(ValueError, match="already exists"):
        store.add(key, "again")
    with pytest.raises(ValueError, match="not a well-formed"):
        store.add("agk_nope", "bad")


def test_hash_key_is_stable_per_file_and_overridable(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    a, b = SQLiteKeyStore(db), SQLiteKeyStore(db)
    assert a.hash_key == b.hash_key and len(a.hash_key) == 32
    assert SQLiteKeyStore(db, hash_key=b"k" * 32).hash_key == b"k" * 32


def test_hash_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTHGATE_HASH_KEY", "ab" * 32)
    assert SQLiteKeyStore(tmp_path / "k.db").hash_key == bytes.fromhex("ab" * 32)


def test_no_plaintext_in_the_database_file(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    store = SQLiteKeyStore(db)
    key = store.create("x").key
    _, _, secret = parse(key)
    store.close()
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("k.db"))
    assert secret.encode() not in raw
    assert key.encode() not in raw


def test_opening_waits_for_another_connection_instead_of_failing(tmp_path: Path) -> None:
    # Another process holds the write lock (creating the schema, adding a key) while this
    # one opens the file and switches it to WAL: SQLite refuses that switch at once,
    # busy time-out or not. Workers of one server starting together hit it.
    import threading

    db = tmp_path / "keys.db"
    other = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t(x)")
    other.execute("BEGIN IMMEDIATE")
    done = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    done.start()
    try:
        store = SQLiteKeyStore(db)
        key = store.create("svc", ["read"]).key
    finally:
        done.join()
        other.close()
    record = store.get(parse(key)[1])
    assert record is not None and record.name == "svc"
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()

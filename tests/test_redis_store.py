"""RedisKeyStore against a real redis-server (tests/redis_server.py): never a fake."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

import asgi_auth
from asgi_auth import APIKeyAuth
from asgi_auth.cli import main
from asgi_auth.keys import KeyRecord, RedisKeyStore
from asgi_auth.keys.format import assemble, hash_secret, new_secret, parse
from tests.helpers_core import ASGIApp, http_scope, make_client
from tests.redis_server import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def url(server: RedisServer) -> str:
    if server.proc is None:  # a test stopped it
        server.restart()
    return server.url


_NAMESPACES = itertools.count(1)


@pytest.fixture
def namespace() -> str:
    return f"t{next(_NAMESPACES)}"  # each test its own keys on the shared server


@pytest.fixture
def store(url: str, namespace: str) -> Iterator[RedisKeyStore]:
    s = RedisKeyStore(url, namespace=namespace)
    yield s
    s.close()


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


# -- the store ----------------------------------------------------------------------------


def test_lifecycle(store: RedisKeyStore) -> None:
    issued = store.create("svc", ["a", "b"], subject="svc-1", metadata={"team": "x"})
    rec = store.get(issued.record.key_id)
    assert rec == issued.record
    assert rec is not None and rec.subject == "svc-1" and dict(rec.metadata) == {"team": "x"}
    assert store.get("nosuchkeyid0") is None

    rotated = store.rotate(rec.key_id, grace=60)
    assert rotated is not None and rotated.key != issued.key
    assert rotated.record.previous_hash == rec.secret_hash
    assert rotated.record.previous_expires_at is not None
    assert store.get(rec.key_id) == rotated.record

    revoked = store.revoke(rec.key_id)
    assert revoked is not None and revoked.status(revoked.revoked_at or 0) == "revoked"
    assert store.get(rec.key_id) == revoked
    with pytest.raises(ValueError, match="revoked"):
        store.rotate(rec.key_id)
    assert store.revoke("nosuchkeyid0") is None
    assert store.rotate("nosuchkeyid0") is None
    assert [r.key_id for r in store.list()] == [rec.key_id]


def test_records_read_back_exactly(store: RedisKeyStore) -> None:
    plain = store.create("plain")  # every optional field absent
    assert store.get(plain.record.key_id) == plain.record
    full = store.create(
        "full", ["s:1", "s:2"], expires_at=time.time() + 1 / 3, subject="me", prefix="live"
    )
    assert store.get(full.record.key_id) == full.record
    store.revoke(full.record.key_id)
    rec = store.get(full.record.key_id)
    assert rec is not None and rec.revoked_at is not None and rec.expires_at is not None
    assert rec.expires_at == full.record.expires_at  # floats survive the round trip


def test_add_existing_key_and_reject_garbage(store: RedisKeyStore) -> None:
    source = store.create("x").key
    other = RedisKeyStore(store._url, namespace=store.namespace + "b")
    rec = other.add(source, "imported", ["read"])
    assert other.get(rec.key_id) == rec
    with pytest.raises(ValueError, match="already exists"):
        other.add(source, "again")
    with pytest.raises(ValueError, match="not a well-formed"):
        other.add("agk_nope", "bad")
    other.close()


def test_expiry(store: RedisKeyStore) -> None:
    issued = store.create("short", expires_at=time.time() + 5)
    rec = store.get(issued.record.key_id)
    assert rec is not None
    assert rec.status(time.time()) == "active"
    assert rec.status(time.time() + 10) == "expired"
    auth = APIKeyAuth(store, clock=lambda: time.time() + 10)
    reply = make_client("wsgi", [auth])("/x", headers=[("X-API-Key", issued.key)])
    assert reply.status == 401 and not reply.reached


def test_hashes_at_rest_never_the_plaintext(
    store: RedisKeyStore, raw: redis.Redis, namespace: str
) -> None:
    issued = store.create("x", ["read"])
    rotated = store.rotate(issued.record.key_id)
    assert rotated is not None
    keys = sorted(raw.keys("{" + namespace + "}:*"))
    assert keys == sorted(
        f"{{{namespace}}}:{k}".encode()
        for k in ("hash_key", "index", "version", f"key:{issued.record.key_id}")
    )
    dump = b""
    for k in keys:
        kind = raw.type(k)
        if kind == b"hash":
            dump += b"".join(a + b for a, b in raw.hgetall(k).items())
        elif kind == b"zset":
            dump += b"".join(m for m, _ in raw.zrange(k, 0, -1, withscores=True))
        else:
            dump += raw.get(k) or b""
    for key in (issued.key, rotated.key):
        _, key_id, secret = parse(key)
        assert secret.encode() not in dump
        assert key.encode() not in dump
    fields = raw.hgetall(f"{{{namespace}}}:key:{issued.record.key_id}")
    _, key_id, secret = parse(rotated.key)
    assert fields[b"secret_hash"] == hash_secret(store.hash_key, key_id, secret)
    assert fields[b"previous_hash"] == issued.record.secret_hash


def test_hash_key_shared_by_every_instance_and_the_cli(
    url: str, namespace: str, raw: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # Several instances starting together: SET NX keeps one hash key for all.
    stores = [RedisKeyStore(url, namespace=namespace) for _ in range(8)]
    seen: list[bytes] = []
    threads = [threading.Thread(target=lambda s=s: seen.append(s.hash_key)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == 1 and len(seen[0]) == 32
    assert raw.get(f"{{{namespace}}}:hash_key") == seen[0]

    # A key the CLI creates verifies with a store in this process, and vice versa.
    code, out, _ = run(
        capsys,
        "keys",
        "create",
        "--redis",
        url,
        "--namespace",
        namespace,
        "--name",
        "cli",
        "--json",
    )
    assert code == 0
    created = json.loads(out)
    _, key_id, secret = parse(created["key"])
    rec = stores[0].get(key_id)
    assert rec is not None and rec.secret_hash == hash_secret(seen[0], key_id, secret)
    for s in stores:
        s.close()


def test_hash_key_given_or_from_environment(
    url: str, namespace: str, raw: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert RedisKeyStore(url, namespace=namespace, hash_key=b"k" * 32).hash_key == b"k" * 32
    monkeypatch.setenv("AUTHGATE_HASH_KEY", "ab" * 32)
    store = RedisKeyStore(url, namespace=namespace)
    store.create("x")
    assert store.hash_key == bytes.fromhex("ab" * 32)
    assert raw.get(f"{{{namespace}}}:hash_key") is None  # kept out of Redis


def test_repr_and_errors_hide_the_password() -> None:
    store = RedisKeyStore("redis://user:s3cretpw@127.0.0.1:1/0", timeout=0.2)
    assert "s3cretpw" not in repr(store) and "***" in repr(store)
    assert "s3cretpw" not in store.url
    with pytest.raises(redis.ConnectionError) as info:
        store.get("nosuchkeyid0")
    assert "s3cretpw" not in str(info.value)


def test_time_outs_bound_every_call(store: RedisKeyStore) -> None:
    """No lookup waits longer than the store's time-out: every socket operation of both
    clients is bounded by it, with at most one reconnect, and `APIKeyAuth`'s
    `store_timeout` (2 s by default) exceeds that whole budget."""
    import asyncio

    assert store.timeout == 0.5
    kwargs = store._client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == 0.5

    async def async_kwargs() -> dict[str, Any]:
        return dict(store._aclient().connection_pool.connection_kwargs)

    akw = asyncio.run(async_kwargs())
    assert akw["socket_timeout"] == akw["socket_connect_timeout"] == 0.5
    for retry in (kwargs["retry"], akw["retry"]):
        assert retry._retries == 1
    assert 2 * 2 * store.timeout <= APIKeyAuth(store).store_timeout


# -- racing writers -----------------------------------------------------------------------


def test_racing_rotations_are_both_applied_in_order(url: str, namespace: str) -> None:
    stores = [RedisKeyStore(url, namespace=namespace) for _ in range(2)]
    key_id = stores[0].create("race").record.key_id
    for _ in range(20):
        barrier = threading.Barrier(2)
        results: list[Any] = [None, None]

        def rotate(i: int, barrier: threading.Barrier, results: list[Any]) -> None:
            barrier.wait()
            results[i] = stores[i].rotate(key_id, grace=60)

        threads = [threading.Thread(target=rotate, args=(i, barrier, results)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = stores[0].get(key_id)
        assert final is not None
        hashes = [r.record.secret_hash for r in results]
        # One rotation after the other: the last one's secret is current, and the first
        # one's is the previous (nothing lost, nothing interleaved).
        assert final.secret_hash in hashes
        other = hashes[1 - hashes.index(final.secret_hash)]
        assert final.previous_hash == other
    for s in stores:
        s.close()


def test_a_revocation_racing_a_rotation_is_never_lost(url: str, namespace: str) -> None:
    stores = [RedisKeyStore(url, namespace=namespace) for _ in range(2)]
    for _ in range(20):
        key_id = stores[0].create("race").record.key_id
        barrier = threading.Barrier(2)
        outcome: dict[str, Any] = {}

        def rotate(key_id: str, barrier: threading.Barrier, outcome: dict[str, Any]) -> None:
            barrier.wait()
            try:
                outcome["rotated"] = stores[0].rotate(key_id)
            except ValueError as exc:  # the revocation came first
                outcome["rotated"] = exc

        def revoke(key_id: str, barrier: threading.Barrier, outcome: dict[str, Any]) -> None:
            barrier.wait()
            outcome["revoked"] = stores[1].revoke(key_id)

        threads = [
            threading.Thread(target=f, args=(key_id, barrier, outcome)) for f in (rotate, revoke)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        final = stores[0].get(key_id)
        assert final is not None and final.revoked_at is not None
        assert outcome["revoked"].revoked_at == final.revoked_at
        if not isinstance(outcome["rotated"], ValueError):  # rotated first, then revoked
            assert final.secret_hash == outcome["rotated"].record.secret_hash
    for s in stores:
        s.close()


def test_racing_creations_lose_nothing(url: str, namespace: str) -> None:
    stores = [RedisKeyStore(url, namespace=namespace) for _ in range(4)]
    issued: list[str] = []

    def create(s: RedisKeyStore, tag: str) -> None:
        issued.extend(s.create(f"{tag}-{i}").record.key_id for i in range(50))

    threads = [threading.Thread(target=create, args=(s, str(n))) for n, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.key_id for r in stores[0].list()) == sorted(issued)
    assert stores[0].count() == 200
    for s in stores:
        s.close()


# -- listing ------------------------------------------------------------------------------


def test_list_pages_with_bounded_memory(
    url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisKeyStore(url, namespace=namespace, page_size=100)
    hk = store.hash_key
    total = 2500
    pipe = store._client.pipeline(transaction=False)
    records = []
    for i in range(total):  # written directly, in bulk: the subject here is reading
        rec = KeyRecord(
            key_id=f"K{i:011d}",
            name=f"n{i}",
            scopes=frozenset({"r"}),
            secret_hash=hash_secret(hk, f"K{i:011d}", "s" * 32),
            created_at=1000.0 + i,
        )
        records.append(rec)
        store._insert_script(
            keys=[store._rkey(rec.key_id), store._index, store._version_key],
            args=[
                *(repr(rec.created_at), rec.key_id, store.channel),
                *("prefix", rec.prefix, "name", rec.name),
                *("scopes", "r", "secret_hash", rec.secret_hash, "created_at", repr(1000.0 + i)),
                *("metadata", "{}"),
            ],
            client=pipe,
        )
    pipe.execute()

    pages: list[int] = []
    page = store._page

    def counted(ids: list[str]) -> list[KeyRecord]:
        pages.append(len(ids))
        return page(ids)

    monkeypatch.setattr(store, "_page", counted)
    it = store.iter_records()
    first = [next(it) for _ in range(3)]
    assert [r.key_id for r in first] == [r.key_id for r in records[:3]]
    assert pages == [100]  # only one page fetched so far
    rest = list(it)
    assert pages == [100] * 25
    assert [r.key_id for r in first + rest] == [r.key_id for r in records]
    assert first + rest == records
    pages.clear()
    assert len(store.list()) == total and max(pages) == 100
    pages.clear()
    assert [r.key_id for r in store.iter_records(page_size=1000)] == [r.key_id for r in records]
    assert pages == [1000, 1000, 500]
    store.close()


def test_list_skips_what_a_shift_would_repeat(url: str, namespace: str) -> None:
    store = RedisKeyStore(url, namespace=namespace, page_size=3)
    ids = [store.create(f"n{i}").record.key_id for i in range(7)]
    it = store.iter_records()
    first = [next(it) for _ in range(3)]
    # A host whose clock lags creates a key "before" every other: ranks shift by one.
    store.clock = lambda: 1.0  # type: ignore[method-assign]
    store.create("early")
    listed = [r.key_id for r in first + list(it)]
    assert sorted(listed) == sorted(ids)  # each once (the early one sorts before the cursor)
    assert listed == [r.key_id for r in store.list() if r.name != "early"]
    assert next(r.name for r in store.list()) == "early"


# -- the middleware -----------------------------------------------------------------------


def test_middleware_authenticates_a_redis_key(kind: str, store: RedisKeyStore) -> None:
    issued = store.create("svc", ["read"], subject="svc-1")
    client = make_client(kind, [APIKeyAuth(store)])
    for _ in range(3):  # a miss through the driver, then cache hits
        reply = client("/items", headers=[("X-API-Key", issued.key)])
        assert reply.status == 200 and reply.reached
        assert reply.identity is not None and reply.identity.subject == "svc-1"
    prefix, key_id, _ = parse(issued.key)
    wrong = assemble(prefix, key_id, new_secret())  # well-formed, the wrong secret
    assert client("/items", headers=[("X-API-Key", wrong)]).status == 401
    rotated = store.rotate(issued.record.key_id, grace=0)
    assert rotated is not None
    fresh = make_client(kind, [APIKeyAuth(store)])
    assert fresh("/items", headers=[("X-API-Key", rotated.key)]).status == 200
    assert fresh("/items", headers=[("X-API-Key", issued.key)]).status == 401
    store.revoke(issued.record.key_id)
    assert (
        make_client(kind, [APIKeyAuth(store)])(
            "/items", headers=[("X-API-Key", rotated.key)]
        ).status
        == 401
    )


def test_a_fresh_store_fetches_its_hash_key_without_blocking_the_loop(
    url: str, namespace: str, kind: str
) -> None:
    """Under ASGI the hash key comes through the async client with the record."""
    key = RedisKeyStore(url, namespace=namespace).create("x").key
    store = RedisKeyStore(url, namespace=namespace)
    if kind == "asgi":

        def no_sync_calls(*a: Any, **kw: Any) -> Any:
            raise AssertionError("a sync Redis call under asyncio")

        store._client.execute_command = no_sync_calls  # type: ignore[method-assign]
    reply = make_client(kind, [APIKeyAuth(store)])("/x", headers=[("X-API-Key", key)])
    assert reply.status == 200


def test_async_lookups_and_close(store: RedisKeyStore) -> None:
    issued = store.create("k")

    async def lookups() -> list[KeyRecord | None]:
        found = [await store.aget(issued.record.key_id), await store.aget("nosuchkeyid0")]
        await store.aclose()
        found.append(await store.aget(issued.record.key_id))  # a new client for this loop
        await store.aclose()
        return found

    assert asyncio.run(lookups()) == [issued.record, None, issued.record]


def test_redis_down_is_503_and_recovers_without_restart(
    kind: str, server: RedisServer, url: str, namespace: str
) -> None:
    store = RedisKeyStore(url, namespace=namespace)
    cached, uncached = store.create("cached").key, store.create("uncached").key
    client = make_client(kind, [APIKeyAuth(store)])
    assert client("/x", headers=[("X-API-Key", cached)]).status == 200

    server.stop()
    try:
        for _ in range(2):  # a failure is not remembered as "unknown key"
            reply = client("/x", headers=[("X-API-Key", uncached)])
            assert reply.status == 503 and not reply.reached
            assert reply.headers["retry-after"] == "5"
            assert "www-authenticate" not in reply.headers
            assert reply.json()["error_description"] == "API key store unavailable"
        # A key verified before keeps working from the cache: the hot path does no I/O.
        assert client("/x", headers=[("X-API-Key", cached)]).status == 200
    finally:
        server.restart()  # same port, same URL, empty (no persistence)

    # Redis is back (empty: nothing was saved). The same store, the same middleware:
    # the clients reconnect by themselves; an unknown key is a 401 again, not a 503,
    # and a key created now works.
    assert client("/x", headers=[("X-API-Key", uncached)]).status == 401
    store._hash_key = None  # the restarted server has a new one (no persistence)
    again = RedisKeyStore(url, namespace=namespace).create("again").key
    fresh = make_client(kind, [APIKeyAuth(store)])
    assert fresh("/x", headers=[("X-API-Key", again)]).status == 200


def test_a_hanging_redis_is_503_within_the_time_out(
    kind: str, server: RedisServer, url: str
) -> None:
    """Redis accepts connections but answers nothing (stopped, not killed): every call
    ends at the store's socket time-out, and the request gets a 503, not a hang."""
    store = RedisKeyStore(url, namespace="hang" + uuid.uuid4().hex[:8], timeout=0.2)
    key = store.create("k").key
    client = make_client(kind, [APIKeyAuth(store)])
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        reply = client("/x", headers=[("X-API-Key", key)])
        assert reply.status == 503 and reply.headers["retry-after"] == "5"
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    # The timed-out connection was dropped: no stale reply is read as a record.
    assert client("/x", headers=[("X-API-Key", key)]).status == 200


def test_concurrent_requests_share_one_lookup(store: RedisKeyStore) -> None:
    key = store.create("k").key
    calls = 0
    aget = store.aget

    async def counted(key_id: str) -> KeyRecord | None:
        nonlocal calls
        calls += 1
        return await aget(key_id)

    store.aget = counted  # type: ignore[method-assign]
    app = ASGIApp()
    mw = asgi_auth.AuthMiddleware(app, authenticators=[APIKeyAuth(store)])
    statuses: list[int] = []

    async def one() -> None:
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await mw(http_scope("/x", headers=[("X-API-Key", key)]), receive, send)

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(50)))

    asyncio.run(many())
    assert statuses == [200] * 50
    assert calls == 1


# -- the command line ---------------------------------------------------------------------


def test_cli_with_redis_flag(url: str, namespace: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "keys",
        "create",
        "--redis",
        url,
        "--namespace",
        namespace,
        "--name",
        "ci",
        "--scopes",
        "a,b",
    )
    assert code == 0
    key = out.strip().splitlines()[-1]
    _, key_id, secret = parse(key)
    code, out, _ = run(capsys, "keys", "list", "--redis", url, "--namespace", namespace, "--json")
    assert code == 0
    listed = json.loads(out)
    assert [k["id"] for k in listed] == [key_id] and listed[0]["scopes"] == ["a", "b"]
    assert secret not in out

    code, out, _ = run(
        capsys, "keys", "rotate", key_id, "--redis", url, "--namespace", namespace, "--grace", "1h"
    )
    assert code == 0 and "old secret stays valid" in out
    new_key = out.strip().splitlines()[-1]
    assert parse(new_key)[1] == key_id and new_key != key
    code, out, _ = run(capsys, "keys", "revoke", key_id, "--redis", url, "--namespace", namespace)
    assert code == 0 and "Revoked" in out
    code, out, _ = run(capsys, "keys", "list", "--redis", url, "--namespace", namespace)
    assert "no active keys" in out
    code, out, _ = run(capsys, "keys", "list", "--redis", url, "--namespace", namespace, "--all")
    assert key_id in out and "revoked" in out
    code, _, err = run(
        capsys, "keys", "revoke", "nosuchkey000", "--redis", url, "--namespace", namespace
    )
    assert code == 1 and "no key with id" in err


def test_cli_reads_the_url_from_the_environment(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHGATE_REDIS_URL", url)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "keys", "create", "--name", "env", "--json")
    assert code == 0
    key_id = json.loads(out)["id"]
    assert RedisKeyStore(url).get(key_id) is not None
    assert not (tmp_path / "authgate-keys.db").exists()

    # --db names a file explicitly: it wins over the environment's Redis.
    db = str(tmp_path / "k.db")
    code, out, _ = run(capsys, "keys", "list", "--db", db, "--json")
    assert code == 0 and json.loads(out) == []
    # --redis wins over the environment too.
    monkeypatch.setenv("AUTHGATE_REDIS_URL", "redis://127.0.0.1:1/0")
    code, out, _ = run(capsys, "keys", "list", "--redis", url, "--json")
    assert code == 0 and key_id in out


def test_cli_db_and_redis_together_is_an_error(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv in (
        ["keys", "list"],
        ["keys", "create", "--name", "x"],
        ["keys", "revoke", "someid"],
        ["keys", "rotate", "someid"],
    ):
        code, _, err = run(capsys, *argv, "--db", str(tmp_path / "k.db"), "--redis", url)
        assert code == 1 and "--db and --redis" in err
        assert not (tmp_path / "k.db").exists()


def test_cli_redis_down_is_a_clear_error_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run(capsys, "keys", "list", "--redis", "redis://:hunter2pw@127.0.0.1:1/0")
    assert code == 1
    assert err.startswith("authgate: error: redis://:***@127.0.0.1:1/0")
    assert "hunter2pw" not in out + err and "Traceback" not in err
    for argv in (
        ["--redis", "http://:hunter2pw@127.0.0.1:1/0"],
        ["--redis", "redis://127.0.0.1:1/0", "--namespace", "a{b}"],
    ):
        code, out, err = run(capsys, "keys", "list", *argv)
        assert code == 1 and err.startswith("authgate: error: ")
        assert "hunter2pw" not in out + err and "Traceback" not in err

"""IntrospectionAuth with a shared cache in a real redis-server (tests/redis_server.py,
never a fake) and the real test IdP: two instances stand for two workers."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
import redis

from asgi_auth import AuthMiddleware, IntrospectionAuth
from asgi_auth.introspection_redis import RedisIntrospectionCache
from tests.helpers_core import ASGIApp, Client, make_client
from tests.idp import IdP, running_idp
from tests.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


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
def raw(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as srv:
        yield srv


def active(idp: IdP, token: str, **extra: Any) -> None:
    idp.introspection[token] = {
        "active": True,
        "scope": "read write",
        "client_id": "svc",
        "sub": "user-9",
        "exp": int(time.time()) + 600,
        "iss": idp.issuer,
        "token_type": "Bearer",
        **extra,
    }


class Worker:
    """One process of a fleet: its own IntrospectionAuth and shared-cache client."""

    def __init__(self, idp: IdP, url: str, namespace: str, kind: str, **kw: Any) -> None:
        self.shared = RedisIntrospectionCache(
            url, namespace=namespace, retry_after=kw.pop("retry_after", 1.0)
        )
        self.auth = IntrospectionAuth(
            endpoint=idp.issuer + "/introspect",
            client_id="rs",
            client_secret="rs-secret",
            shared_cache=self.shared,
            **kw,
        )
        self.client: Client = make_client(kind, [self.auth])

    def status(self, token: str) -> int:
        return self.client("/x", headers=[("Authorization", f"Bearer {token}")]).status

    def close(self) -> None:
        self.shared.close()


def entries(raw: redis.Redis, namespace: str) -> list[bytes]:
    return sorted(raw.scan_iter(match="{" + namespace + "}:introspection:*"))


PAIRS = [("asgi", "wsgi"), ("wsgi", "asgi"), ("asgi", "asgi"), ("wsgi", "wsgi")]


@pytest.mark.parametrize(("first", "second"), PAIRS)
def test_second_worker_is_answered_from_redis(
    idp: IdP, url: str, namespace: str, raw: redis.Redis, first: str, second: str
) -> None:
    active(idp, "tok-shared")
    a = Worker(idp, url, namespace, first)
    b = Worker(idp, url, namespace, second)
    assert a.status("tok-shared") == 200
    assert idp.introspections == 1
    assert b.status("tok-shared") == 200
    assert idp.introspections == 1  # worker b asked Redis, not the IdP
    ident = b.auth.cached("tok-shared")
    assert ident is not None and ident.subject == "user-9" and ident.scopes == {"read", "write"}
    assert b.status("tok-shared") == 200  # now from b's own cache
    assert a.status("nobody-knows") == 401
    assert b.status("nobody-knows") == 401
    assert idp.introspections == 2  # the inactive answer was shared too
    a.close()
    b.close()


def test_redis_ttl_never_outlives_exp_nor_cache_ttl(
    idp: IdP, url: str, namespace: str, raw: redis.Redis
) -> None:
    w = Worker(idp, url, namespace, "wsgi", cache_ttl=300, negative_ttl=10)
    active(idp, "short-exp", exp=int(time.time()) + 100)
    active(idp, "long-exp", exp=int(time.time()) + 6000)
    assert w.status("short-exp") == 200
    (key,) = entries(raw, namespace)
    assert 90_000 < raw.pttl(key) <= 100_000  # exp comes first
    raw.delete(key)
    assert w.status("long-exp") == 200
    (key,) = entries(raw, namespace)
    assert 290_000 < raw.pttl(key) <= 300_000  # cache_ttl comes first
    raw.delete(key)
    assert w.status("inactive") == 401
    (key,) = entries(raw, namespace)
    assert 0 < raw.pttl(key) <= 10_000  # negative_ttl
    w.close()


def test_stored_deadlines_are_honoured_by_the_reader(idp: IdP, url: str, namespace: str) -> None:
    clock = Clock()
    a = Worker(idp, url, namespace, "wsgi", cache_ttl=30, negative_ttl=10)
    b = Worker(idp, url, namespace, "asgi", cache_ttl=30, negative_ttl=10, clock=clock)
    active(idp, "t")
    assert a.status("t") == 200
    assert a.status("gone") == 401
    assert idp.introspections == 2
    clock.now += 5
    assert b.status("t") == 200
    assert b.status("gone") == 401
    assert idp.introspections == 2
    # b's own caches keep them only as long as Redis would have: until a's deadlines.
    clock.now += 6  # 11 s after a's answers: the inactive one is over
    assert b.status("gone") == 401
    assert idp.introspections == 3
    clock.now += 20  # 31 s: past cache_ttl (the Redis entry is still there, by real time)
    assert b.auth.cached("t") is None
    assert b.status("t") == 200
    assert idp.introspections == 4
    a.close()
    b.close()


def test_revoked_at_the_server_and_expired_in_redis_is_refused(
    idp: IdP, url: str, namespace: str, raw: redis.Redis
) -> None:
    a = Worker(idp, url, namespace, "wsgi")
    b = Worker(idp, url, namespace, "wsgi")
    active(idp, "r")
    assert a.status("r") == 200
    idp.introspection["r"] = {"active": False}
    for key in entries(raw, namespace):
        raw.delete(key)  # what PX does once the entry's time is up
    assert b.status("r") == 401
    assert idp.introspections == 2
    a.close()
    b.close()


def test_garbage_in_redis_is_ignored_never_a_pass(
    idp: IdP, url: str, namespace: str, raw: redis.Redis
) -> None:
    a = Worker(idp, url, namespace, "asgi")
    b = Worker(idp, url, namespace, "wsgi")
    active(idp, "g")
    assert a.status("g") == 200
    (key,) = entries(raw, namespace)
    junk_values = (
        b"not json",
        b"{}",
        b'{"answer": {"active": "true", "sub": "x"}, "until": 1e12}',
        b'{"answer": {"active": true, "sub": "x", "exp": "soon"}, "until": 1e12}',
        b'{"answer": {"active": true, "sub": "x", "exp": 5}, "until": 1e12}',
        b'{"answer": {"active": true, "sub": "x"}, "until": NaN}',
    )
    for junk in junk_values:
        raw.set(key, junk)
        before = idp.introspections
        idp.introspection["g"] = {"active": False}
        assert b.status("g") == 401  # the IdP decided
        assert idp.introspections == before + 1
        b.auth._inactive.clear()
    a.close()
    b.close()


def test_token_never_stored_in_redis(idp: IdP, url: str, namespace: str, raw: redis.Redis) -> None:
    token = "opaque-" + uuid.uuid4().hex
    active(idp, token, jti=token)  # an IdP that echoes the token: not stored either
    w = Worker(idp, url, namespace, "asgi")
    assert w.status(token) == 200
    assert w.status(token + "-inactive") == 401
    keys = list(raw.scan_iter(match="*"))
    assert len(entries(raw, namespace)) == 2
    for key in keys:
        assert token.encode() not in key
        value = raw.get(key)
        assert value is not None and token.encode() not in value
    w.close()


def test_hash_key_from_the_option_stays_out_of_redis(
    idp: IdP, url: str, namespace: str, raw: redis.Redis
) -> None:
    active(idp, "k")
    shared = RedisIntrospectionCache(url, namespace=namespace, hash_key=b"h" * 32)
    auth = IntrospectionAuth(
        endpoint=idp.issuer + "/introspect",
        client_id="rs",
        client_secret="rs-secret",
        shared_cache=shared,
    )
    assert make_client("wsgi", [auth])("/x", headers=[("Authorization", "Bearer k")]).status == 200
    assert raw.get("{" + namespace + "}:hash_key") is None
    assert len(entries(raw, namespace)) == 1
    other = Worker(idp, url, namespace, "wsgi")  # another key: shares nothing with it
    assert other.status("k") == 200
    assert idp.introspections == 2
    shared.close()
    other.close()


def test_redis_down_falls_back_to_the_idp_and_sharing_resumes(
    idp: IdP,
    url: str,
    namespace: str,
    server: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = Worker(idp, url, namespace, "asgi", retry_after=0)
    b = Worker(idp, url, namespace, "wsgi", retry_after=0)
    active(idp, "before")
    assert a.status("before") == 200
    server.stop()
    caplog.set_level(logging.WARNING, logger="asgi_auth")
    for n, token in enumerate(["d1", "d2", "d3"]):
        active(idp, token)
        assert a.status(token) == 200
        assert b.status(token) == 200
        assert idp.introspections == 1 + 2 * (n + 1)  # each worker asks: nothing shared
    assert b.status("never-active") == 401  # inactive: still a 401, never a 500
    down = [r for r in caplog.records if "unavailable" in r.getMessage()]
    assert len(down) == 2  # once per worker for the whole outage
    assert "rs-secret" not in caplog.text

    server.restart()
    active(idp, "after")
    count = idp.introspections
    assert a.status("after") == 200
    assert b.status("after") == 200
    assert idp.introspections == count + 1  # shared again
    assert len([r for r in caplog.records if "is back" in r.getMessage()]) == 2
    a.close()
    b.close()


def test_slow_redis_is_bounded_and_skipped_for_retry_after(
    idp: IdP, url: str, namespace: str, server: RedisServer
) -> None:
    active(idp, "s")
    w = Worker(idp, url, namespace, "wsgi", retry_after=60)
    assert server.proc is not None
    server.proc.send_signal(19)  # SIGSTOP: connections accepted by the kernel, no answers
    try:
        started = time.monotonic()
        assert w.status("s") == 200
        first = time.monotonic() - started
        started = time.monotonic()
        active(idp, "s2")
        assert w.status("s2") == 200  # Redis skipped for retry_after: no waiting at all
        second = time.monotonic() - started
    finally:
        server.proc.send_signal(18)  # SIGCONT
    assert first < 3.0
    assert second < 0.2
    assert idp.introspections == 2
    w.close()


def test_concurrent_requests_make_one_redis_lookup(
    idp: IdP, url: str, namespace: str, raw: redis.Redis
) -> None:
    active(idp, "c")
    a = Worker(idp, url, namespace, "wsgi")
    assert a.status("c") == 200
    b = Worker(idp, url, namespace, "asgi")
    app = AuthMiddleware(ASGIApp(), authenticators=[b.auth])
    raw.config_resetstat()

    async def main() -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
            rs = await asyncio.gather(
                *(client.get("/x", headers={"Authorization": "Bearer c"}) for _ in range(50))
            )
        await b.shared.aclose()
        return [r.status_code for r in rs]

    assert asyncio.run(main()) == [200] * 50
    assert idp.introspections == 1
    stats = raw.info("commandstats")
    # one GET for the hash key, one for the answer; the stats call itself is INFO
    assert stats["cmdstat_get"]["calls"] == 2
    a.close()
    b.close()


def test_repr_hides_the_redis_password() -> None:
    shared = RedisIntrospectionCache("redis://user:s3cr3t-pw@127.0.0.1:6390/0")
    auth = IntrospectionAuth(
        endpoint="https://idp.example/i", client_id="a", client_secret="b", shared_cache=shared
    )
    for text in (repr(shared), repr(auth), shared.url):
        assert "s3cr3t-pw" not in text
        assert "127.0.0.1:6390" in text
    shared.close()


def test_options_are_checked() -> None:
    for kw in ({"namespace": "a{b}"}, {"timeout": 0}, {"retry_after": -1}, {"hash_key": b"x"}):
        with pytest.raises(ValueError):
            RedisIntrospectionCache("redis://127.0.0.1:6390/0", **kw)

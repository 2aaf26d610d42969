"""Failed-credential throttling (`throttle=Throttle(...)`), under both middlewares.

Memory storage in-process; a real redis-server (tests/redis_server.py) for a fleet and
for Redis going down. Time: the `limits` storages read `time.time()`, which the window
tests replace with a hand-moved clock (no sleeps); the rest use an hour-long window that
never passes during a test and assert Retry-After ranges.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

import asgi_auth
import wsgi_auth
from asgi_auth import APIKeyAuth
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.format import assemble, new_secret, parse
from asgi_auth.throttle import Throttle
from tests.helpers_core import (
    ASGIApp,
    Clock,
    CountingStore,
    Reply,
    WSGIApp,
    altered,
    asgi_call,
    http_scope,
    wsgi_call,
    wsgi_environ,
)
from tests.redis_server import RedisServer

HOUR = 3600


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Worker:
    """One middleware (ASGI or WSGI) over its own app; requests from any client address."""

    def __init__(self, kind: str, auth: APIKeyAuth, **options: Any) -> None:
        self.kind = kind
        if kind == "asgi":
            self.asgi_app = ASGIApp()
            self.amw = asgi_auth.AuthMiddleware(self.asgi_app, authenticators=[auth], **options)
        else:
            self.wsgi_app = WSGIApp()
            self.wmw = wsgi_auth.AuthMiddleware(self.wsgi_app, authenticators=[auth], **options)

    def __call__(
        self, key: str | None, *, client: str = "203.0.113.7", xff: str | None = None
    ) -> Reply:
        headers = [] if key is None else [("X-API-Key", key)]
        if xff is not None:
            headers.append(("X-Forwarded-For", xff))
        if self.kind == "asgi":
            scope = http_scope("/items", headers=headers)
            scope["client"] = (client, 50000)
            return asgi_call(self.amw, self.asgi_app, scope)
        environ = wsgi_environ("/items", headers=headers)
        environ["REMOTE_ADDR"] = client
        return wsgi_call(self.wmw, self.wsgi_app, environ)


def assert_throttled(r: Reply, window: int = HOUR) -> None:
    assert r.status == 429, (r.status, r.body)
    assert not r.reached
    assert 1 <= int(r.headers["retry-after"]) <= window
    assert r.headers["content-type"] == "application/json"
    assert "www-authenticate" not in r.headers
    assert r.json() == {
        "error": "too_many_requests",
        "error_description": "too many failed credentials; retry later",
    }


# -- per address ----------------------------------------------------------------------------


def test_failures_from_one_address_are_throttled_there_only(kind: str) -> None:
    store = MemoryKeyStore()
    good = store.create("svc", ["items:read"]).key
    other_good = store.create("svc2", ["items:read"]).key
    app = Worker(kind, APIKeyAuth(store), throttle=Throttle(f"3/{HOUR} seconds", per="address"))
    assert app(good).status == 200  # verified and cached before the attack
    for _ in range(3):
        assert app(altered(other_good)).status == 401
    r = app(altered(other_good))
    assert_throttled(r)
    assert good not in r.body.decode() and other_good[:-1] not in r.body.decode()
    assert all(other_good[:-1] not in v for v in r.headers.values())
    # A valid credential this process has not verified yet: refused before verification.
    assert_throttled(app(other_good))
    # One it verified already is not a guess: it passes (see asgi_auth.throttle).
    assert app(good).status == 200
    # Another address is unaffected.
    assert app(altered(other_good), client="198.51.100.2").status == 401
    assert app(other_good, client="198.51.100.2").status == 200


def test_what_counts_and_what_does_not(kind: str) -> None:
    store = MemoryKeyStore()
    reader = store.create("reader", ["other:scope"]).key
    app = Worker(
        kind,
        APIKeyAuth(store),
        throttle=Throttle(f"2/{HOUR} seconds", per="address"),
        required_scopes=["items:read"],
    )
    for _ in range(5):
        assert app(None).status == 401  # no credential: not a guess
        assert app(reader).status == 403  # a good credential without the scope
    assert app("").status == 400  # an empty credential: counted
    assert app("junk").status == 401  # not a key at all: counted
    assert_throttled(app("junk"))


def test_the_throttled_request_never_reaches_the_store(kind: str) -> None:
    store = CountingStore()
    good = store.create("svc", ["items:read"]).key
    app = Worker(kind, APIKeyAuth(store), throttle=Throttle(f"2/{HOUR} seconds"))
    for _ in range(2):
        assert app(altered(good)).status == 401
    calls = len(store.calls)
    for _ in range(5):
        assert_throttled(app(altered(good)))
        assert_throttled(app(good))
    assert len(store.calls) == calls


def test_the_window_passing_lifts_the_throttle(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    wall = Clock()
    mono = Clock(1000.0)
    monkeypatch.setattr(time, "time", wall)  # what limits' memory storage reads
    store = MemoryKeyStore()
    good = store.create("svc", ["items:read"]).key
    app = Worker(
        kind,
        APIKeyAuth(store),
        throttle=Throttle("2/minute", strategy="fixed-window", clock=mono),
    )
    for _ in range(2):
        assert app(altered(good)).status == 401
    r = app(altered(good))
    assert_throttled(r, 60)
    retry = int(r.headers["retry-after"])
    wall.advance(retry - 1.5)
    mono.advance(retry - 1.5)
    assert_throttled(app(good))
    wall.advance(2)
    mono.advance(2)
    assert app(good).status == 200


# -- per key id -----------------------------------------------------------------------------


def guess(key: str) -> str:
    """A well-formed key with `key`'s id and another secret: a guesser computes the
    checksum, so its guesses reach the key store."""
    prefix, key_id, _secret = parse(key)
    return assemble(prefix, key_id, new_secret())


def test_guessing_one_key_s_secret_is_throttled_per_key_id(kind: str) -> None:
    store = MemoryKeyStore()
    target = store.create("target", ["items:read"]).key
    bystander = store.create("bystander", ["items:read"]).key
    app = Worker(kind, APIKeyAuth(store), throttle=Throttle(f"3/{HOUR} seconds", per="key_id"))
    # Guesses at one key's secret, from three addresses.
    for i in range(3):
        assert app(guess(target), client=f"192.0.2.{i}").status == 401
    assert_throttled(app(guess(target), client="192.0.2.99"))
    assert_throttled(app(target, client="192.0.2.99"))  # not verified here yet
    assert app(bystander, client="192.0.2.0").status == 200  # another key id: untouched


# -- X-Forwarded-For ------------------------------------------------------------------------


def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(kind: str) -> None:
    store = MemoryKeyStore()
    good = store.create("svc", ["items:read"]).key
    app = Worker(
        kind,
        APIKeyAuth(store),
        throttle=Throttle(f"2/{HOUR} seconds", per="address"),
        trusted_proxies=["10.0.0.0/8"],
    )
    proxy = "10.0.0.1"
    # Through the proxy: counted per rightmost X-Forwarded-For entry (the proxy's word).
    for _ in range(2):
        assert app(altered(good), client=proxy, xff="1.1.1.1, 192.0.2.9").status == 401
    assert_throttled(app(good, client=proxy, xff="9.9.9.9, 192.0.2.9"))
    assert app(good, client=proxy, xff="192.0.2.9, 192.0.2.10").status == 200
    # From an untrusted peer the header is the client's own words: the peer is counted.
    for _ in range(2):
        assert app(altered(good), client="198.51.100.5", xff="192.0.2.77").status == 401
    assert_throttled(app(altered(good), client="198.51.100.5", xff="192.0.2.78"))
    assert app(altered(good), client=proxy, xff="192.0.2.77").status == 401


# -- options --------------------------------------------------------------------------------


def test_bad_options_and_a_repr_without_the_password() -> None:
    with pytest.raises(ValueError):
        Throttle(fail="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Throttle(per="user")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Throttle(strategy="sliding")  # type: ignore[arg-type]
    t = Throttle("5/minute", storage="redis://:s3cret@127.0.0.1:1/0")
    assert "s3cret" not in repr(t)


# -- a fleet through a real Redis -------------------------------------------------------------


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


# Each test its own client address on the module's shared server: counts never mix.
_ADDRESSES = (f"192.0.2.{i}" for i in itertools.count(1))


def test_two_workers_share_the_count_through_redis(url: str) -> None:
    store = MemoryKeyStore()
    good = store.create("svc", ["items:read"]).key
    client = next(_ADDRESSES)
    limit = f"4/{HOUR} seconds"
    a = Worker("asgi", APIKeyAuth(store), throttle=Throttle(limit, storage=url))
    b = Worker("wsgi", APIKeyAuth(store), throttle=Throttle(limit, storage=url))
    for worker in (a, b, a, b):
        assert worker(altered(good), client=client).status == 401
    # Over the shared limit: each worker refuses from its own first failure there on.
    assert_throttled(a(altered(good), client=client))
    assert_throttled(b(altered(good), client=client))
    assert_throttled(a(good, client=client))
    assert_throttled(b(good, client=client))
    assert a(good, client="198.51.100.9").status == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_redis_down_fails_closed_with_503_or_open(
    kind: str, url: str, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    store = MemoryKeyStore()
    good = store.create("svc", ["items:read"]).key
    client = next(_ADDRESSES)
    limit = f"5/{HOUR} seconds"
    closed = Worker(kind, APIKeyAuth(store), throttle=Throttle(limit, storage=url))
    opened = Worker(kind, APIKeyAuth(store), throttle=Throttle(limit, storage=url, fail="open"))
    for worker in (closed, opened):
        assert worker(altered(good), client=client).status == 401  # now needs the check
    server.stop()
    try:
        with caplog.at_level(logging.WARNING, logger="asgi_auth"):
            r = closed(good, client=client)
            assert r.status == 503, r.body
            assert r.headers["retry-after"] == "5"
            assert json.loads(r.body)["error"] == "temporarily_unavailable"
            assert not r.reached
            for _ in range(3):
                assert opened(good, client=client).status == 200
                assert opened(altered(good), client=client).status == 401
            # A request that needs no check (no recent failure here) is not held up.
            assert closed(good, client="198.51.100.3").status == 200
        down = [m for m in caplog.messages if "throttle storage" in m and "unavailable" in m]
        assert len(down) == 2  # once per outage, per throttle
        assert all("s3cret" not in m and "127.0.0.1" not in m for m in down)
    finally:
        server.restart()
    assert closed(good, client=client).status == 200


def test_under_asgi_a_hung_redis_does_not_block_the_event_loop() -> None:
    store = MemoryKeyStore()
    good = store.create("svc", ["items:read"]).key
    with socket.socket() as silent:  # accepts connections, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        throttle = Throttle(
            "5/minute", storage=f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.3
        )
        throttle.recent["a:203.0.113.7"] = time.monotonic() + 60  # a recent failure
        app = ASGIApp()
        mw = asgi_auth.AuthMiddleware(app, authenticators=[APIKeyAuth(store)], throttle=throttle)
        scope = http_scope("/items", headers=[("X-API-Key", good)])
        sent: list[dict[str, Any]] = []
        ticks: list[float] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def main() -> float:
            done = asyncio.Event()

            async def ticker() -> None:
                while not done.is_set():
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(ticker())
            started = time.monotonic()
            await mw(scope, receive, send)
            elapsed = time.monotonic() - started
            done.set()
            await task
            return elapsed

        elapsed = asyncio.run(main())
    assert sent[0]["status"] == 503  # fail closed
    assert elapsed < 2.0, elapsed
    # The loop kept running while the storage call waited in its thread.
    assert len(ticks) >= 10, (len(ticks), elapsed)


def test_many_threads_failing_at_once_never_raise(kind: str) -> None:
    store = MemoryKeyStore()
    good = store.create("svc", ["items:read"]).key
    app = Worker(kind, APIKeyAuth(store), throttle=Throttle(f"1000/{HOUR} seconds"))
    statuses: list[int] = []

    def run(n: int) -> None:
        for i in range(40):
            statuses.append(app(altered(good), client=f"192.0.2.{(n * 40 + i) % 50}").status)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(statuses) == 320
    assert set(statuses) == {401}

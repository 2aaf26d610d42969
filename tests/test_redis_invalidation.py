"""Revocation and rotation reach every process: RedisKeyStore's change announcements
(pub/sub), resubscription after a loss, reconciliation, and serving while Redis is down.
Against a real redis-server; "another process" is another store instance on its own
connections, as the CLI or another worker would be (tests/test_fleet_workers.py runs
real worker processes)."""

from __future__ import annotations

import itertools
import logging
import queue
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from asgi_auth import APIKeyAuth
from asgi_auth.cli import main
from asgi_auth.keys import MemoryKeyStore, RedisKeyStore
from tests.helpers_core import make_client
from tests.redis_server import RedisServer

WAIT = 10.0  # an upper bound for events that take milliseconds; never a timing assertion


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis-changes"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def url(server: RedisServer) -> str:
    if server.proc is None:
        server.restart()
    return server.url


_NAMESPACES = itertools.count(1)


@pytest.fixture
def namespace() -> str:
    return f"inv{next(_NAMESPACES)}"


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class Clock:
    """A clock that moves only when told (for tests where no write stamps a time)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Heard:
    """A listener beside APIKeyAuth's on the same store: what the store announced."""

    def __init__(self, store: RedisKeyStore) -> None:
        self.events: queue.Queue[str | None] = queue.Queue()
        store.listen(self)

    def __call__(self, key_id: str | None) -> None:
        self.events.put(key_id)

    def wait_for(self, expected: str | None) -> None:
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"the store never announced {expected!r}"
            try:
                if self.events.get(timeout=left) == expected:
                    return
            except queue.Empty:
                continue

    def drain(self) -> None:
        while True:
            try:
                self.events.get_nowait()
            except queue.Empty:
                return


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def serving(store: RedisKeyStore, heard: Heard) -> None:
    """Subscribed, with the first subscription's drop-everything already applied."""
    assert store.subscribed.wait(WAIT), "never subscribed"
    heard.drain()


@pytest.fixture
def worker(url: str, namespace: str) -> Iterator[RedisKeyStore]:
    """The store a serving process reads through."""
    store = RedisKeyStore(url, namespace=namespace, reconcile_interval=3600.0)
    yield store
    store.close()


@pytest.fixture
def admin(url: str, namespace: str) -> Iterator[RedisKeyStore]:
    """Another process's store on the same keys: where writes come from."""
    store = RedisKeyStore(url, namespace=namespace)
    yield store
    store.close()


def test_a_revocation_elsewhere_is_refused_at_once(
    kind: str, worker: RedisKeyStore, admin: RedisKeyStore
) -> None:
    issued = admin.create("svc", ["read"])
    auth = APIKeyAuth(worker, cache_ttl=3600)  # an hour: only the announcement explains a 401
    heard = Heard(worker)
    client = make_client(kind, [auth])
    headers = [("X-API-Key", issued.key)]
    assert client("/x", headers=headers).status == 200  # starts the subscriber
    serving(worker, heard)
    assert client("/x", headers=headers).status == 200
    assert auth.cached(issued.key) is not None  # verified and cached for an hour

    admin.revoke(issued.record.key_id)
    heard.wait_for(issued.record.key_id)

    assert auth.cached(issued.key) is None
    reply = client("/x", headers=headers)
    assert reply.status == 401 and not reply.reached
    assert 'error="invalid_token"' in reply.headers["www-authenticate"]


def test_a_rotation_elsewhere_takes_effect_at_once(
    kind: str, worker: RedisKeyStore, admin: RedisKeyStore
) -> None:
    issued = admin.create("svc", ["read"])
    auth = APIKeyAuth(worker, cache_ttl=3600)
    heard = Heard(worker)
    client = make_client(kind, [auth])
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200
    serving(worker, heard)
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200

    rotated = admin.rotate(issued.record.key_id, grace=0)
    assert rotated is not None
    heard.wait_for(issued.record.key_id)

    # The clock stands still, so neither cache_ttl nor the one-second recheck of an
    # unmatched secret explains these: only the announcement does.
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 401
    assert client("/x", headers=[("X-API-Key", rotated.key)]).status == 200


def test_the_cli_revokes_across_processes(
    worker: RedisKeyStore, url: str, namespace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    issued = worker.create("svc")
    auth = APIKeyAuth(worker, cache_ttl=3600)
    heard = Heard(worker)
    client = make_client("asgi", [auth])
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200
    serving(worker, heard)
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200

    code = main(["keys", "revoke", issued.record.key_id, "--redis", url, "--namespace", namespace])
    capsys.readouterr()
    assert code in (0, None)
    heard.wait_for(issued.record.key_id)
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 401


def test_a_key_added_elsewhere_leaves_the_unknown_cache(
    worker: RedisKeyStore, admin: RedisKeyStore
) -> None:
    """A key tried before it existed is remembered as unknown (negative_ttl); adding it
    elsewhere announces it, so it works at once, not negative_ttl later."""
    from asgi_auth.keys.format import assemble, new_key_id, new_secret

    key = assemble("agk", new_key_id(), new_secret())
    auth = APIKeyAuth(worker, negative_ttl=3600)
    heard = Heard(worker)
    client = make_client("asgi", [auth])
    assert client("/x", headers=[("X-API-Key", key)]).status == 401
    serving(worker, heard)
    assert client("/x", headers=[("X-API-Key", key)]).status == 401  # remembered unknown

    record = admin.add(key, "late")
    heard.wait_for(record.key_id)
    assert client("/x", headers=[("X-API-Key", key)]).status == 200


def test_after_a_lost_subscription_everything_cached_is_dropped(
    worker: RedisKeyStore, url: str, namespace: str
) -> None:
    """A change that no one announced (here: written straight into Redis, as if its
    message was lost) is caught when the subscription comes back, not at cache_ttl."""
    gone = worker.create("gone")
    kept = worker.create("kept")
    auth = APIKeyAuth(worker, cache_ttl=3600)
    heard = Heard(worker)
    client = make_client("wsgi", [auth])
    for issued in (gone, kept):
        assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200
    serving(worker, heard)
    for issued in (gone, kept):
        assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200

    raw = redis.Redis.from_url(url)
    try:
        raw.hset(f"{{{namespace}}}:key:{gone.record.key_id}", "revoked_at", "1.0")
        assert client("/x", headers=[("X-API-Key", gone.key)]).status == 200  # still cached
        killed = raw.client_kill_filter(_type="pubsub")  # the subscriber's connection drops
        assert killed >= 1
    finally:
        raw.close()

    heard.wait_for(None)  # resubscribed, and dropped everything
    assert worker.subscribed.is_set()
    assert client("/x", headers=[("X-API-Key", gone.key)]).status == 401
    assert client("/x", headers=[("X-API-Key", kept.key)]).status == 200


def test_reconciliation_catches_a_lost_announcement(url: str, namespace: str) -> None:
    store = RedisKeyStore(url, namespace=namespace, reconcile_interval=0.05)
    try:
        issued = store.create("svc")
        auth = APIKeyAuth(store, cache_ttl=3600)
        heard = Heard(store)
        client = make_client("asgi", [auth])
        assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200
        serving(store, heard)
        assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200

        raw = redis.Redis.from_url(url)
        try:  # a revocation whose message was lost: the record and counter, no PUBLISH
            raw.hset(f"{{{namespace}}}:key:{issued.record.key_id}", "revoked_at", "1.0")
            raw.incr(f"{{{namespace}}}:version")
        finally:
            raw.close()
        heard.wait_for(None)
        assert client("/x", headers=[("X-API-Key", issued.key)]).status == 401
    finally:
        store.close()


def test_a_gap_in_announcements_drops_everything(
    worker: RedisKeyStore, admin: RedisKeyStore, url: str, namespace: str
) -> None:
    silent = admin.create("silent")
    other = admin.create("other")
    auth = APIKeyAuth(worker, cache_ttl=3600)
    heard = Heard(worker)
    client = make_client("asgi", [auth])
    assert client("/x", headers=[("X-API-Key", silent.key)]).status == 200
    serving(worker, heard)
    assert client("/x", headers=[("X-API-Key", silent.key)]).status == 200

    raw = redis.Redis.from_url(url)
    try:  # one announcement lost ...
        raw.hset(f"{{{namespace}}}:key:{silent.record.key_id}", "revoked_at", "1.0")
        raw.incr(f"{{{namespace}}}:version")
    finally:
        raw.close()
    admin.revoke(other.record.key_id)  # ... shows as a gap in the next one's counter
    heard.wait_for(None)
    assert client("/x", headers=[("X-API-Key", silent.key)]).status == 401


def test_redis_down_cached_keys_serve_uncached_get_503_and_recovery_needs_no_restart(
    kind: str, server: RedisServer, url: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = RedisKeyStore(url, namespace=namespace, timeout=0.5, reconcile_interval=3600.0)
    try:
        cached = store.create("cached")
        uncached = store.create("uncached")
        auth = APIKeyAuth(store, cache_ttl=3600)
        heard = Heard(store)
        client = make_client(kind, [auth])
        assert client("/x", headers=[("X-API-Key", cached.key)]).status == 200
        serving(store, heard)
        assert client("/x", headers=[("X-API-Key", cached.key)]).status == 200

        caplog.set_level(logging.WARNING, logger="asgi_auth")
        server.stop()
        wait_until(lambda: not store.subscribed.is_set(), "the loss was noticed")
        assert heard.events.empty()  # nothing dropped on the loss itself
        assert client("/x", headers=[("X-API-Key", cached.key)]).status == 200
        reply = client("/x", headers=[("X-API-Key", uncached.key)])
        assert reply.status == 503 and not reply.reached
        assert int(reply.headers["retry-after"]) >= 1
        assert "subscription lost" in caplog.text

        server.restart()  # empty: no persistence, so the keys are gone with it
        heard.wait_for(None)
        assert "subscription restored" in caplog.text
        assert client("/x", headers=[("X-API-Key", cached.key)]).status == 401
        store._hash_key = None  # the restarted, empty server made a new one
        again = store.create("again")
        assert client("/x", headers=[("X-API-Key", again.key)]).status == 200
    finally:
        store.close()


def test_max_stale_serves_past_the_ttl_only_while_redis_is_down(
    kind: str, server: RedisServer, url: str, namespace: str
) -> None:
    store = RedisKeyStore(url, namespace=namespace, timeout=0.5, listen=False)
    try:
        issued = store.create("svc")
        clock = Clock()
        auth = APIKeyAuth(store, cache_ttl=10, max_stale=100, clock=clock)
        strict = APIKeyAuth(store, cache_ttl=10, clock=clock)  # max_stale=0: the default
        client = make_client(kind, [auth])
        strict_client = make_client(kind, [strict])
        headers = [("X-API-Key", issued.key)]
        assert client("/x", headers=headers).status == 200
        assert strict_client("/x", headers=headers).status == 200

        server.stop()
        clock.now += 20  # past cache_ttl, within max_stale
        assert client("/x", headers=headers).status == 200
        assert client("/x", headers=headers).status == 200  # just failed: no new attempt
        reply = strict_client("/x", headers=headers)
        assert reply.status == 503 and int(reply.headers["retry-after"]) >= 1
        clock.now += 100  # past cache_ttl + max_stale
        reply = client("/x", headers=headers)
        assert reply.status == 503 and not reply.reached
    finally:
        store.close()


def test_max_stale_never_outlives_a_revocation_once_redis_answers(url: str, namespace: str) -> None:
    store = RedisKeyStore(url, namespace=namespace, listen=False)
    try:
        issued = store.create("svc")
        clock = Clock()
        auth = APIKeyAuth(store, cache_ttl=10, max_stale=100, clock=clock)
        client = make_client("asgi", [auth])
        assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200
        other = RedisKeyStore(url, namespace=namespace, listen=False)
        other.revoke(issued.record.key_id)
        other.close()
        clock.now += 20  # stale: Redis answers, so the revocation is seen
        assert client("/x", headers=[("X-API-Key", issued.key)]).status == 401
    finally:
        store.close()


def test_listen_false_starts_no_subscriber(url: str, namespace: str) -> None:
    store = RedisKeyStore(url, namespace=namespace, listen=False)
    try:
        issued = store.create("svc")
        auth = APIKeyAuth(store)
        assert make_client("asgi", [auth])("/x", headers=[("X-API-Key", issued.key)]).status == 200
        assert store._listener_thread is None and not store.subscribed.is_set()
    finally:
        store.close()


def test_close_stops_the_subscriber(url: str, namespace: str) -> None:
    store = RedisKeyStore(url, namespace=namespace)
    issued = store.create("svc")
    auth = APIKeyAuth(store)
    assert make_client("wsgi", [auth])("/x", headers=[("X-API-Key", issued.key)]).status == 200
    assert store.subscribed.wait(WAIT)
    thread = store._listener_thread
    assert thread is not None and thread.is_alive()
    store.close()
    assert not thread.is_alive()


def test_a_local_store_revokes_in_process_at_once(kind: str, tmp_path: Path) -> None:
    store = MemoryKeyStore()
    issued = store.create("svc")
    auth = APIKeyAuth(store, cache_ttl=3600)
    client = make_client(kind, [auth])
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 200
    store.revoke(issued.record.key_id)
    assert client("/x", headers=[("X-API-Key", issued.key)]).status == 401

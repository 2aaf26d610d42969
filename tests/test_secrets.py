"""No credential ever leaks: not into logs, exception messages, tracebacks, reprs or
responses, whatever way a check fails. Failures are still logged, with a reason code and
the (non-secret) key id."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import asgi_auth
import wsgi_auth
from asgi_auth import APIKeyAuth, AuthError, AuthUser, Identity, RequestInfo
from asgi_auth.flow import SyncDriver
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.format import CHECKSUM_LEN, ID_LEN, assemble, new_secret, parse
from tests.helpers_core import (
    ASGIApp,
    FailingStore,
    Reply,
    WSGIApp,
    asgi_call,
    http_scope,
    wsgi_call,
    wsgi_environ,
)

REQ = RequestInfo("GET", "/items", "https", "127.0.0.1")
LOGGERS = ("asgi_auth", "wsgi_auth", "")


@dataclass
class Secrets:
    """Every plaintext used, and the fragments of it that must never show."""

    fragments: set[str] = field(default_factory=set)

    def add(self, key: str) -> str:
        body = key.rpartition("_")[2]
        secret = body[ID_LEN:-CHECKSUM_LEN]  # sliced, not parsed: bad checksums count too
        assert len(secret) == 32
        self.fragments.update({key, secret, secret[-8:], key[-8:], secret[:8]})
        return key

    def assert_absent(self, text: str, where: str) -> None:
        for fragment in self.fragments:
            assert fragment not in text, f"a secret fragment leaked into {where}"


@dataclass
class World:
    store: MemoryKeyStore
    auth: APIKeyAuth
    secrets: Secrets
    errors: list[AuthError]
    good: str
    revoked: str
    expired: str
    wrong_secret: str
    wrong_checksum: str
    foreign: str


@pytest.fixture
def world() -> World:
    store = MemoryKeyStore()
    secrets = Secrets()
    good = secrets.add(store.create("good", scopes=["read"]).key)
    revoked = secrets.add(store.create("revoked").key)
    store.revoke(parse(revoked)[1])
    expired = secrets.add(store.create("expired", expires_at=time.time() - 1).key)
    prefix, key_id, _ = parse(good)
    wrong_secret = secrets.add(assemble(prefix, key_id, new_secret()))
    wrong_checksum = secrets.add(good[:-1] + ("A" if good[-1] != "A" else "B"))
    foreign = secrets.add(MemoryKeyStore().create("elsewhere").key)
    return World(
        store,
        APIKeyAuth(store, scheme="ApiKey"),
        secrets,
        [],
        good,
        revoked,
        expired,
        wrong_secret,
        wrong_checksum,
        foreign,
    )


def failing_requests(w: World) -> Iterator[tuple[str, dict[str, object]]]:
    """(expected reason, request) for every kind of failure."""
    yield "wrong_secret", {"headers": [("X-API-Key", w.wrong_secret)]}
    yield "bad_checksum", {"headers": [("X-API-Key", w.wrong_checksum)]}
    yield "revoked", {"headers": [("X-API-Key", w.revoked)]}
    yield "expired", {"headers": [("X-API-Key", w.expired)]}
    yield "unknown_key", {"headers": [("X-API-Key", w.foreign)]}
    yield "duplicate_credential", {"headers": [("X-API-Key", w.good), ("X-API-Key", w.good)]}
    yield "credential_too_large", {"headers": [("X-API-Key", w.good + "A" * 10_000)]}
    yield "malformed_header", {"headers": [("X-API-Key", (w.good + "é").encode())]}
    yield "malformed_header", {"headers": [("Authorization", f"ApiKey {w.good} {w.good}")]}
    yield (
        "multiple_credentials",
        {"headers": [("X-API-Key", w.good), ("Authorization", f"ApiKey {w.good}")]},
    )
    yield "query_credential", {"query": f"api_key={w.good}"}
    yield "wrong_prefix", {"headers": [("X-API-Key", "zzz" + w.good[3:])]}


def assert_reply_clean(reply: Reply, secrets: Secrets) -> None:
    assert not reply.reached
    secrets.assert_absent(reply.body.decode("latin-1"), "a response body")
    secrets.assert_absent(repr(reply.raw_headers), "response headers")


def assert_error_clean(error: BaseException, secrets: Secrets) -> None:
    secrets.assert_absent(str(error), "an exception message")
    secrets.assert_absent(repr(error), "an exception repr")
    secrets.assert_absent(repr(error.args), "exception args")
    secrets.assert_absent("".join(traceback.format_exception(error)), "a traceback")
    if isinstance(error, AuthError):
        secrets.assert_absent(repr(dict(error.context)), "error context")
        secrets.assert_absent(repr(error.body()), "an error body")


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def assert_logs_clean(caplog: pytest.LogCaptureFixture, secrets: Secrets) -> None:
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    for record in caplog.records:
        secrets.assert_absent(formatter.format(record), f"log record {record.name}")
        secrets.assert_absent(repr(record.__dict__), f"log record attributes {record.name}")
    secrets.assert_absent(caplog.text, "the captured log")


def test_no_secret_leaks_from_middlewares(world: World, logs: pytest.LogCaptureFixture) -> None:
    w = world

    def hook(error: AuthError, request: RequestInfo) -> None:
        w.errors.append(error)

    asgi_app, wsgi_app = ASGIApp(), WSGIApp()
    amw = asgi_auth.AuthMiddleware(asgi_app, authenticators=[w.auth], on_error=hook)
    wmw = wsgi_auth.AuthMiddleware(wsgi_app, authenticators=[w.auth], on_error=hook)

    expected = []
    for reason, req in failing_requests(w):
        for reply in (
            asgi_call(amw, asgi_app, http_scope("/items", **req)),  # type: ignore[arg-type]
            wsgi_call(wmw, wsgi_app, wsgi_environ("/items", **req)),  # type: ignore[arg-type]
        ):
            assert reply.status in (400, 401), reason
            assert_reply_clean(reply, w.secrets)
            expected.append(reason)
    assert [e.reason for e in w.errors] == expected
    for error in w.errors:
        assert_error_clean(error, w.secrets)
    assert_logs_clean(logs, w.secrets)

    # Every failure was logged once, by the logger of the middleware that saw it.
    failures = [r for r in logs.records if r.getMessage().startswith("authentication failed")]
    assert [r.name for r in failures] == ["asgi_auth", "wsgi_auth"] * (len(expected) // 2)
    assert all(r.levelno >= logging.INFO for r in failures)
    for record, reason in zip(failures, expected, strict=True):
        assert f"reason={reason}" in record.getMessage()
    key_id = parse(w.good)[1]
    by_reason = {r: rec.getMessage() for rec, r in zip(failures, expected, strict=True)}
    assert f"key_id={key_id}" in by_reason["wrong_secret"]
    assert f"key_id={parse(w.revoked)[1]}" in by_reason["revoked"]
    assert f"key_id={parse(w.expired)[1]}" in by_reason["expired"]
    assert f"key_id={parse(w.foreign)[1]}" in by_reason["unknown_key"]
    assert "client=203.0.113.7" in by_reason["revoked"]


def test_no_secret_leaks_from_the_core(world: World, logs: pytest.LogCaptureFixture) -> None:
    w = world
    for key in (w.wrong_secret, w.wrong_checksum, w.revoked, w.expired, w.foreign):
        with pytest.raises(AuthError) as info:
            SyncDriver().run(w.auth.flow(key, REQ))
        assert_error_clean(info.value, w.secrets)
    assert_logs_clean(logs, w.secrets)


def test_no_secret_leaks_when_the_store_fails(logs: pytest.LogCaptureFixture) -> None:
    store = FailingStore(ConnectionError("connection refused"))
    secrets = Secrets()
    key = secrets.add(store.create("k").key)
    auth = APIKeyAuth(store)
    errors: list[AuthError] = []
    wsgi_app = WSGIApp()
    wmw = wsgi_auth.AuthMiddleware(
        wsgi_app, authenticators=[auth], on_error=lambda e, r: errors.append(e)
    )
    reply = wsgi_call(wmw, wsgi_app, wsgi_environ("/x", headers=[("X-API-Key", key)]))
    assert reply.status == 503
    assert_reply_clean(reply, secrets)
    assert_error_clean(errors[0], secrets)
    assert_logs_clean(logs, secrets)
    message = logs.records[-1].getMessage()
    assert "reason=key_store_unavailable" in message
    assert f"key_id={parse(key)[1]}" in message
    assert "error=ConnectionError" in message


def test_reprs_hold_no_secret(world: World) -> None:
    w = world
    issued = w.store.create("fresh", scopes=["read"])
    w.secrets.add(issued.key)
    rotated = w.store.rotate(issued.record.key_id)
    assert rotated is not None
    w.secrets.add(rotated.key)
    identity = SyncDriver().run(w.auth.flow(rotated.key, REQ))
    objects: list[object] = [
        issued,
        issued.record,
        rotated,
        rotated.record,
        w.store,
        w.auth,
        identity,
        AuthUser(identity),
        identity.claims,
        *w.store.list(),
    ]
    for obj in objects:
        text = repr(obj)
        w.secrets.assert_absent(text, f"repr of {type(obj).__name__}")
        w.secrets.assert_absent(str(obj), f"str of {type(obj).__name__}")
        # Not even the keyed hashes, nor the key that makes them, are shown.
        for blob in (issued.record.secret_hash, rotated.record.secret_hash, w.store.hash_key):
            assert repr(blob) not in text
            assert blob.hex() not in text
    assert isinstance(identity, Identity)
    # The plaintext exists only on the IssuedKey, shown once.
    assert rotated.key.startswith("agk_")
    for record in w.store.list():
        assert rotated.key not in repr(record.public_dict())


def test_redis_store_reprs_hold_no_secret_nor_the_url_password(tmp_path: Path) -> None:
    from asgi_auth.keys import RedisKeyStore
    from tests.redis_server import RedisServer

    server = RedisServer(tmp_path, password="pw-" + new_secret())
    server.start()
    try:
        store = RedisKeyStore(server.url)
        auth = APIKeyAuth(store)
        secrets = Secrets()
        issued = store.create("fresh", scopes=["read"])
        secrets.add(issued.key)
        rotated = store.rotate(issued.record.key_id)
        assert rotated is not None
        secrets.add(rotated.key)
        identity = SyncDriver().run(auth.flow(rotated.key, REQ))
        assert server.password is not None
        secrets.fragments.add(server.password)
        for obj in (store, auth, issued, rotated, identity, *store.list()):
            secrets.assert_absent(repr(obj), f"repr of {type(obj).__name__}")
            secrets.assert_absent(str(obj), f"str of {type(obj).__name__}")
            for blob in (rotated.record.secret_hash, store.hash_key):
                assert repr(blob) not in repr(obj) and blob.hex() not in repr(obj)
        store.close()
    finally:
        server.stop()

"""wsgi_auth.AuthMiddleware in a Flask app, as users install it; threads; sharing with ASGI."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

import pytest
from fastapi import FastAPI
from flask import Flask, jsonify, request
from starlette.requests import Request
from starlette.testclient import TestClient
from werkzeug.test import EnvironBuilder, run_wsgi_app

import asgi_auth
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.base import IssuedKey
from tests.helpers_core import altered
from tests.helpers_frameworks import MIB, CountingStore, GatedStore, big_body, sha256
from wsgi_auth import ANONYMOUS, IDENTITY_KEY, APIKeyAuth, AuthMiddleware, Identity, Rule

THREADS = 20


def make_flask(auth: APIKeyAuth, **options: Any) -> Flask:
    flask_app = Flask(__name__)
    seen: list[Identity] = []
    flask_app.config["seen"] = seen

    @flask_app.get("/health")
    def health() -> Any:
        ident = request.environ["wsgi_auth.identity"]
        seen.append(ident)
        return jsonify(ok=True, authenticated=ident.is_authenticated)

    @flask_app.get("/me")
    def me() -> Any:
        ident = request.environ["wsgi_auth.identity"]
        seen.append(ident)
        return jsonify(
            subject=ident.subject,
            scopes=sorted(ident.scopes),
            method=ident.method,
            key_id=ident.key_id,
            name=ident.name,
        )

    @flask_app.route("/items", methods=["GET", "POST"])
    def items() -> Any:
        return jsonify(method=request.method)

    @flask_app.get("/feed")
    def feed() -> Any:
        ident = request.environ[IDENTITY_KEY]
        return jsonify(authenticated=ident.is_authenticated, subject=ident.subject)

    @flask_app.post("/upload")
    def upload() -> Any:
        data = request.get_data()
        return jsonify(sha256=sha256(data), length=len(data))

    @flask_app.get("/headers")
    def headers() -> Any:
        return jsonify([[k, v] for k, v in request.headers.items()])

    # The one line the README promises.
    flask_app.wsgi_app = AuthMiddleware(  # type: ignore[method-assign]
        flask_app.wsgi_app, authenticators=[auth], public_paths=["/health"], **options
    )
    return flask_app


RULES = [
    Rule("/items", methods=["GET"], scopes=["items:read"]),
    Rule("/items", methods=["POST"], scopes=["items:write"]),
]


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def reader(store: MemoryKeyStore) -> IssuedKey:
    return store.create("ci-bot", ["items:read"], subject="alice")


def key(issued: IssuedKey) -> dict[str, str]:
    return {"X-API-Key": issued.key}


def test_wsgi_auth_reexports_the_shared_authenticator() -> None:
    assert APIKeyAuth is asgi_auth.APIKeyAuth
    assert Identity is asgi_auth.Identity
    assert IDENTITY_KEY == "wsgi_auth.identity"


def test_200_401_403(store: MemoryKeyStore, reader: IssuedKey) -> None:
    client = make_flask(APIKeyAuth(store), rules=RULES).test_client()
    assert client.get("/items", headers=key(reader)).get_json() == {"method": "GET"}

    missing = client.get("/items")
    assert missing.status_code == 401
    assert missing.status == "401 Unauthorized"
    assert missing.get_json() == {
        "error": "unauthorized",
        "error_description": "authentication required",
    }
    assert missing.headers["WWW-Authenticate"].startswith("ApiKey ")
    assert missing.headers["Cache-Control"] == "no-store"

    bad = client.get("/items", headers={"X-API-Key": altered(reader.key)})
    assert bad.status_code == 401
    assert bad.get_json()["error"] == "invalid_token"

    forbidden = client.post("/items", headers=key(reader))
    assert forbidden.status_code == 403
    assert 'error="insufficient_scope"' in forbidden.headers["WWW-Authenticate"]
    assert 'scope="items:write"' in forbidden.headers["WWW-Authenticate"]
    assert forbidden.get_json()["scope"] == "items:write"

    writer = store.create("writer", ["items:write"])
    assert client.post("/items", headers=key(writer)).get_json() == {"method": "POST"}

    two = client.get("/items", headers=[("X-API-Key", reader.key), ("X-API-Key", reader.key)])
    assert two.status_code == 400
    assert two.get_json()["error"] == "invalid_request"


def test_environ_identity(store: MemoryKeyStore, reader: IssuedKey) -> None:
    flask_app = make_flask(APIKeyAuth(store))
    client = flask_app.test_client()
    assert client.get("/me", headers=key(reader)).get_json() == {
        "subject": "alice",
        "scopes": ["items:read"],
        "method": "api_key",
        "key_id": reader.record.key_id,
        "name": "ci-bot",
    }
    (ident,) = flask_app.config["seen"]
    assert isinstance(ident, Identity)
    assert ident.is_authenticated


def test_public_path_is_anonymous(store: MemoryKeyStore) -> None:
    flask_app = make_flask(APIKeyAuth(store))
    resp = flask_app.test_client().get("/health")
    assert resp.status_code == 200
    assert resp.get_json() == {"ok": True, "authenticated": False}
    assert flask_app.config["seen"] == [ANONYMOUS]
    assert flask_app.config["seen"][0] is ANONYMOUS


def test_optional_paths(store: MemoryKeyStore, reader: IssuedKey) -> None:
    client = make_flask(APIKeyAuth(store), optional_paths=["/feed"]).test_client()
    assert client.get("/feed").get_json() == {"authenticated": False, "subject": ""}
    assert client.get("/feed", headers=key(reader)).get_json() == {
        "authenticated": True,
        "subject": "alice",
    }
    assert client.get("/feed", headers={"X-API-Key": "agk_bogus"}).status_code == 401


def test_large_body_reaches_the_app_byte_for_byte(store: MemoryKeyStore, reader: IssuedKey) -> None:
    data = big_body()
    client = make_flask(APIKeyAuth(store)).test_client()
    resp = client.post("/upload", headers=key(reader), data=data)
    assert resp.status_code == 200
    assert resp.get_json() == {"sha256": sha256(data), "length": MIB}


def test_request_headers_reach_the_app_intact(store: MemoryKeyStore, reader: IssuedKey) -> None:
    client = make_flask(APIKeyAuth(store)).test_client()
    sent = {"X-API-Key": reader.key, "X-Custom": "custom value; with=stuff", "Accept": "text/x"}
    got = {k.lower(): v for k, v in client.get("/headers", headers=sent).get_json()}
    for name, value in sent.items():
        assert got[name.lower()] == value


def test_one_authenticator_serves_asgi_and_wsgi_at_once() -> None:
    store = CountingStore()
    keys = [store.create(f"k{i}", ["items:read"], subject=f"s{i}") for i in range(4)]
    auth = APIKeyAuth(store)

    asgi_app = FastAPI()

    @asgi_app.get("/me")
    async def me(request: Request) -> dict[str, str]:
        return {"subject": request.auth.subject}

    asgi_app.add_middleware(asgi_auth.AuthMiddleware, authenticators=[auth])
    flask_client = make_flask(auth).test_client()

    with TestClient(asgi_app) as asgi_client:
        # Alternate which side sees each key first: both fill and read one cache.
        for i, issued in enumerate(keys):
            first, second = (asgi_client, flask_client) if i % 2 else (flask_client, asgi_client)
            for client in (first, second, first):
                resp = client.get("/me", headers=key(issued))
                assert resp.status_code == 200
                body = resp.json() if client is asgi_client else resp.get_json()
                assert body["subject"] == f"s{i}"
        assert asgi_client.get("/me").status_code == 401
    assert flask_client.get("/me").status_code == 401
    assert store.lookups == len(keys)


def _call(app: Any, environ: dict[str, Any]) -> tuple[str, bytes]:
    app_iter, status, _headers = run_wsgi_app(app, environ, buffered=True)
    try:
        return status, b"".join(app_iter)
    finally:
        close = getattr(app_iter, "close", None)
        if close is not None:
            close()


def test_many_threads_share_one_lookup() -> None:
    store = GatedStore()
    issued = store.create("svc", ["items:read"], subject="svc")
    flask_app = make_flask(APIKeyAuth(store, store_timeout=30.0))
    entered = 0
    entered_lock = threading.Lock()

    def counted(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        nonlocal entered
        with entered_lock:
            entered += 1
        return flask_app(environ, start_response)

    results: list[tuple[str, bytes] | BaseException] = []
    results_lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker() -> None:
        environ = EnvironBuilder(path="/me", headers=key(issued)).get_environ()
        start.wait(timeout=30)
        try:
            out: tuple[str, bytes] | BaseException = _call(counted, environ)
        except BaseException as exc:  # reported below, not lost in the thread
            out = exc
        with results_lock:
            results.append(out)

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for t in threads:
        t.start()
    try:
        assert store.entered.wait(30), "no thread reached the key store"
        for _ in range(2000):  # bounded: wait until every request is inside the middleware
            with entered_lock:
                if entered == THREADS:
                    break
            threading.Event().wait(0.005)  # readiness polling, not a timing assertion
    finally:
        store.release.set()
        for t in threads:
            t.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert len(results) == THREADS
    for out in results:
        assert not isinstance(out, BaseException), out
        status, body = out
        assert status == "200 OK", body
        assert b'"subject":"svc"' in body
    # Single flight: the requests that overlapped the first lookup waited for it, and one
    # arriving just after it ended found the record it cached.
    assert store.lookups == 1, store.lookups

    # A second wave finds the key cached: no lookup at all.
    before = store.lookups
    waves = []
    for _ in range(THREADS):
        environ = EnvironBuilder(path="/me", headers=key(issued)).get_environ()
        waves.append(threading.Thread(target=lambda e=environ: results.append(_call(counted, e))))
    for t in waves:
        t.start()
    for t in waves:
        t.join(timeout=30)
    assert len(results) == 2 * THREADS
    assert all(not isinstance(r, BaseException) and r[0] == "200 OK" for r in results)
    assert store.lookups == before


def test_many_threads_with_many_keys() -> None:
    store = CountingStore()
    keys = [store.create(f"k{i}", ["items:read"], subject=f"s{i}") for i in range(5)]
    flask_app = make_flask(APIKeyAuth(store))
    statuses: list[tuple[int, str, bytes]] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        issued = keys[n % len(keys)]
        client = flask_app.test_client()
        start.wait(timeout=30)
        for _ in range(5):
            resp = client.get("/me", headers=key(issued))
            with lock:
                statuses.append((n, resp.status, resp.data))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert len(statuses) == THREADS * 5
    for n, status, data in statuses:
        assert status == "200 OK"
        assert f'"subject":"s{n % len(keys)}"'.encode() in data
    assert store.lookups == len(keys)


def test_rules_match_the_routed_path_under_script_name(
    store: MemoryKeyStore, reader: IssuedKey
) -> None:
    flask_app = make_flask(APIKeyAuth(store), rules=RULES)
    environ = EnvironBuilder(
        path="/items", method="POST", base_url="http://localhost/api/", headers=key(reader)
    )
    status, body = _call(flask_app, environ.get_environ())
    assert status.startswith("403"), body
    environ = EnvironBuilder(path="/health", base_url="http://localhost/api/")
    assert _call(flask_app, environ.get_environ())[0] == "200 OK"

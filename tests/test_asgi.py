"""AuthMiddleware in FastAPI and Starlette apps, as users install it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from asgi_auth import (
    ANONYMOUS,
    APIKeyAuth,
    AuthError,
    AuthMiddleware,
    ErrorResponse,
    Identity,
    RequestInfo,
    Rule,
)
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.base import IssuedKey
from tests.helpers_core import altered
from tests.helpers_frameworks import (
    MIB,
    ASGIRecorder,
    AsyncGatedStore,
    CountingStore,
    big_body,
    sha256,
)

# -- apps ------------------------------------------------------------------------------


def _identity_view(request: Request) -> dict[str, Any]:
    ident = request.scope["auth"]
    return {
        "authenticated": request.user.is_authenticated,
        "display_name": request.user.display_name,
        "user_identity_is_auth": request.user.identity is ident,
        "subject": ident.subject,
        "scopes": sorted(ident.scopes),
        "method": ident.method,
        "key_id": ident.key_id,
    }


def _raw_headers(request: Request) -> list[list[str]]:
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.headers.raw]


def make_fastapi(auth: APIKeyAuth, seen: list[Any] | None = None, **options: Any) -> FastAPI:
    app = FastAPI()
    seen = seen if seen is not None else []

    @app.get("/health")
    async def health(request: Request) -> dict[str, Any]:
        return {"ok": True, "authenticated": request.user.is_authenticated}

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        seen.append(request.scope["auth"])
        return _identity_view(request)

    @app.get("/items")
    async def list_items() -> list[str]:
        return ["a", "b"]

    @app.post("/items")
    async def create_item() -> dict[str, str]:
        return {"created": "c"}

    @app.get("/feed")
    async def feed(request: Request) -> dict[str, Any]:
        return {"authenticated": request.user.is_authenticated, "subject": request.auth.subject}

    @app.get("/admin")
    async def admin() -> dict[str, str]:
        return {"admin": "yes"}

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, Any]:
        body = await request.body()
        return {"sha256": sha256(body), "length": len(body)}

    @app.get("/headers")
    async def headers(request: Request) -> list[list[str]]:
        return _raw_headers(request)

    # The one line the README promises.
    app.add_middleware(AuthMiddleware, authenticators=[auth], public_paths=["/health"], **options)
    return app


@requires("items:read")
async def starlette_items(request: Request) -> JSONResponse:
    return JSONResponse(["a", "b"])


def make_starlette(auth: APIKeyAuth, **options: Any) -> AuthMiddleware:
    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, "authenticated": request.user.is_authenticated})

    async def me(request: Request) -> JSONResponse:
        return JSONResponse(_identity_view(request))

    async def upload(request: Request) -> JSONResponse:
        body = await request.body()
        return JSONResponse({"sha256": sha256(body), "length": len(body)})

    async def headers(request: Request) -> JSONResponse:
        return JSONResponse(_raw_headers(request))

    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": "yes"})

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/me", me),
            Route("/items", starlette_items),
            Route("/upload", upload, methods=["POST"]),
            Route("/headers", headers),
            Route("/admin", admin),
            Route("/custom/{rest:path}", admin),
        ]
    )
    return AuthMiddleware(app, authenticators=[auth], public_paths=["/health"], **options)


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def reader(store: MemoryKeyStore) -> IssuedKey:
    return store.create("ci-bot", ["items:read"], subject="alice")


@pytest.fixture
def writer(store: MemoryKeyStore) -> IssuedKey:
    return store.create("writer", ["items:write"], subject="bob")


@pytest.fixture
def noscope(store: MemoryKeyStore) -> IssuedKey:
    return store.create("nobody", [], subject="carol")


AppFactory = Callable[..., Any]
FACTORIES = {"fastapi": make_fastapi, "starlette": make_starlette}


@pytest.fixture(params=sorted(FACTORIES))
def make_app(request: pytest.FixtureRequest) -> AppFactory:
    return FACTORIES[request.param]


def key(issued: IssuedKey) -> dict[str, str]:
    return {"X-API-Key": issued.key}


# -- basics ----------------------------------------------------------------------------


def test_key_gets_200_and_no_key_gets_401(
    make_app: AppFactory, store: MemoryKeyStore, reader: IssuedKey
) -> None:
    with TestClient(make_app(APIKeyAuth(store))) as client:
        ok = client.get("/me", headers=key(reader))
        assert ok.status_code == 200
        denied = client.get("/me")
        assert denied.status_code == 401
        assert denied.json() == {
            "error": "unauthorized",
            "error_description": "authentication required",
        }
        assert denied.headers["www-authenticate"].startswith("ApiKey ")
        assert denied.headers["content-type"] == "application/json"
        assert denied.headers["cache-control"] == "no-store"

        bad = client.get("/me", headers={"X-API-Key": altered(reader.key)})
        assert bad.status_code == 401
        assert bad.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in bad.headers["www-authenticate"]

        health = client.get("/health")
        assert health.status_code == 200
        assert health.json() == {"ok": True, "authenticated": False}


def test_request_user_and_scope_auth(
    make_app: AppFactory, store: MemoryKeyStore, reader: IssuedKey
) -> None:
    with TestClient(make_app(APIKeyAuth(store))) as client:
        body = client.get("/me", headers=key(reader)).json()
    assert body == {
        "authenticated": True,
        "display_name": "ci-bot",
        "user_identity_is_auth": True,
        "subject": "alice",
        "scopes": ["items:read"],
        "method": "api_key",
        "key_id": reader.record.key_id,
    }


def test_scope_auth_is_an_immutable_identity(store: MemoryKeyStore, reader: IssuedKey) -> None:
    seen: list[Any] = []
    with TestClient(make_fastapi(APIKeyAuth(store), seen)) as client:
        assert client.get("/me", headers=key(reader)).status_code == 200
    (ident,) = seen
    assert isinstance(ident, Identity)
    assert ident.subject == "alice"
    assert ident.scopes == frozenset({"items:read"})
    assert ident.method == "api_key"
    assert ident.key_id == reader.record.key_id
    assert ident.claims["name"] == "ci-bot"
    with pytest.raises(AttributeError):
        ident.subject = "mallory"  # type: ignore[misc]


def test_starlette_requires_uses_identity_scopes(
    store: MemoryKeyStore, reader: IssuedKey, writer: IssuedKey
) -> None:
    with TestClient(make_starlette(APIKeyAuth(store))) as client:
        assert client.get("/items", headers=key(reader)).json() == ["a", "b"]
        forbidden = client.get("/items", headers=key(writer))
        # Starlette's own 403, not ours: the middleware let the valid key through.
        assert forbidden.status_code == 403
        assert "www-authenticate" not in forbidden.headers
        assert forbidden.text == "Forbidden"


def test_rule_scopes_give_403_insufficient_scope(
    make_app: AppFactory, store: MemoryKeyStore, reader: IssuedKey
) -> None:
    admin_key = store.create("root", ["admin", "items:read"])
    app = make_app(APIKeyAuth(store), rules=[Rule("/admin", scopes=["admin"])])
    with TestClient(app) as client:
        denied = client.get("/admin", headers=key(reader))
        assert denied.status_code == 403
        challenge = denied.headers["www-authenticate"]
        assert 'error="insufficient_scope"' in challenge
        assert 'scope="admin"' in challenge
        assert denied.json()["error"] == "insufficient_scope"
        assert denied.json()["scope"] == "admin"
        assert client.get("/admin", headers=key(admin_key)).json() == {"admin": "yes"}
        # Without any key it is still a 401, not a 403.
        assert client.get("/admin").status_code == 401


def test_method_specific_rules(store: MemoryKeyStore, reader: IssuedKey, writer: IssuedKey) -> None:
    both = store.create("both", ["items:read", "items:write"])
    rules = [
        Rule("/items", methods=["GET"], scopes=["items:read"]),
        Rule("/items", methods=["POST"], scopes=["items:write"]),
    ]
    with TestClient(make_fastapi(APIKeyAuth(store), rules=rules)) as client:
        assert client.get("/items", headers=key(reader)).status_code == 200
        post = client.post("/items", headers=key(reader))
        assert post.status_code == 403
        assert 'scope="items:write"' in post.headers["www-authenticate"]

        assert client.post("/items", headers=key(writer)).json() == {"created": "c"}
        get = client.get("/items", headers=key(writer))
        assert get.status_code == 403
        assert 'scope="items:read"' in get.headers["www-authenticate"]
        # A GET rule covers HEAD too, as routers treat HEAD as a body-less GET.
        assert client.head("/items", headers=key(writer)).status_code == 403

        assert client.get("/items", headers=key(both)).status_code == 200
        assert client.post("/items", headers=key(both)).status_code == 200


def test_optional_paths(store: MemoryKeyStore, reader: IssuedKey) -> None:
    with TestClient(make_fastapi(APIKeyAuth(store), optional_paths=["/feed"])) as client:
        anon = client.get("/feed")
        assert anon.status_code == 200
        assert anon.json() == {"authenticated": False, "subject": ANONYMOUS.subject}
        known = client.get("/feed", headers=key(reader))
        assert known.json() == {"authenticated": True, "subject": "alice"}
        bad = client.get("/feed", headers={"X-API-Key": "agk_not-a-real-key"})
        assert bad.status_code == 401
        assert bad.json()["error"] == "invalid_token"
        # Other paths stay protected.
        assert client.get("/items").status_code == 401


def test_lifespan_passes_through(store: MemoryKeyStore, reader: IssuedKey) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, str]]:
        events.append("startup")
        yield {"db": "connected"}
        events.append("shutdown")

    async def state(request: Request) -> JSONResponse:
        return JSONResponse({"db": request.state.db, "user": request.user.display_name})

    inner = Starlette(routes=[Route("/state", state)], lifespan=lifespan)
    app = AuthMiddleware(inner, authenticators=[APIKeyAuth(store)], public_paths=["/health"])
    with TestClient(app) as client:
        assert events == ["startup"]
        assert client.get("/state", headers=key(reader)).json() == {
            "db": "connected",
            "user": "ci-bot",
        }
        assert client.get("/state").status_code == 401
    assert events == ["startup", "shutdown"]


def test_fastapi_lifespan_with_add_middleware(store: MemoryKeyStore) -> None:
    events: list[str] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)
    app.add_middleware(AuthMiddleware, authenticators=[APIKeyAuth(store)], public_paths=["/health"])
    with TestClient(app):
        assert events == ["startup"]
    assert events == ["startup", "shutdown"]


def test_on_error_hook_can_replace_or_keep_the_response(store: MemoryKeyStore) -> None:
    calls: list[tuple[str, int, str, str]] = []

    def on_error(error: AuthError, request: RequestInfo) -> ErrorResponse | None:
        calls.append((error.reason, error.status, request.method, request.path))
        if request.path.startswith("/custom"):
            return ErrorResponse(404, [("Content-Type", "text/plain"), ("X-Hook", "1")], b"nope")
        return None

    with TestClient(make_starlette(APIKeyAuth(store), on_error=on_error)) as client:
        custom = client.get("/custom/thing")
        assert custom.status_code == 404
        assert custom.text == "nope"
        assert custom.headers["x-hook"] == "1"
        assert custom.headers["content-length"] == "4"
        assert "www-authenticate" not in custom.headers

        default = client.get("/items", headers={"X-API-Key": "agk_garbage"})
        assert default.status_code == 401
        assert default.json()["error"] == "invalid_token"
        assert 'error="invalid_token"' in default.headers["www-authenticate"]
    assert calls == [
        ("missing_credentials", 401, "GET", "/custom/thing"),
        ("malformed", 401, "GET", "/items"),
    ]


def test_large_body_reaches_the_app_byte_for_byte(
    make_app: AppFactory, store: MemoryKeyStore, reader: IssuedKey
) -> None:
    data = big_body()
    with TestClient(make_app(APIKeyAuth(store))) as client:
        resp = client.post("/upload", headers=key(reader), content=data)
    assert resp.status_code == 200
    assert resp.json() == {"sha256": sha256(data), "length": MIB}


def test_request_headers_reach_the_app_intact(
    make_app: AppFactory, store: MemoryKeyStore, reader: IssuedKey
) -> None:
    sent = [
        ("X-API-Key", reader.key),
        ("X-Custom", "custom value; with=stuff"),
        ("X-Multi", "one"),
        ("X-Multi", "two"),
        ("Accept", "application/json"),
    ]
    with TestClient(make_app(APIKeyAuth(store))) as client:
        raw = client.get("/headers", headers=sent).json()
    for name, value in sent:
        assert [name.lower(), value] in raw
    multi = [v for k, v in raw if k == "x-multi"]
    assert multi == ["one", "two"]


def test_authorization_apikey_scheme(store: MemoryKeyStore, reader: IssuedKey) -> None:
    app = make_fastapi(APIKeyAuth(store, scheme="ApiKey"))
    with TestClient(app) as client:
        ok = client.get("/me", headers={"Authorization": f"ApiKey {reader.key}"})
        assert ok.status_code == 200
        assert ok.json()["subject"] == "alice"
        # Scheme names are case-insensitive (RFC 9110 §11.1).
        assert client.get("/me", headers={"Authorization": f"apikey {reader.key}"}).is_success
        # The X-API-Key header still works alongside the scheme.
        assert client.get("/me", headers=key(reader)).status_code == 200
        both = client.get(
            "/me", headers={"Authorization": f"ApiKey {reader.key}", "X-API-Key": reader.key}
        )
        assert both.status_code == 400
        assert both.json()["error"] == "invalid_request"
        denied = client.get("/me")
        assert denied.status_code == 401
        assert denied.headers["www-authenticate"].startswith("ApiKey ")


def test_require_https(store: MemoryKeyStore, reader: IssuedKey) -> None:
    app = make_fastapi(APIKeyAuth(store), require_https=True)
    with TestClient(app) as plain:
        refused = plain.get("/me", headers=key(reader))
        assert refused.status_code == 400
        assert refused.json()["error"] == "invalid_request"
        # Forwarded headers from an untrusted client change nothing.
        spoofed = plain.get("/me", headers={**key(reader), "X-Forwarded-Proto": "https"})
        assert spoofed.status_code == 400
        assert plain.get("/health").status_code == 200
    with TestClient(app, base_url="https://testserver") as tls:
        assert tls.get("/me", headers=key(reader)).status_code == 200


def test_trusted_proxy_forwarded_proto(store: MemoryKeyStore, reader: IssuedKey) -> None:
    app = make_fastapi(APIKeyAuth(store), require_https=True, trusted_proxies=["127.0.0.1"])
    https = {**key(reader), "X-Forwarded-Proto": "https"}
    with TestClient(app, client=("127.0.0.1", 41000)) as via_proxy:
        assert via_proxy.get("/me", headers=https).status_code == 200
        forwarded = {**key(reader), "Forwarded": "for=198.51.100.7;proto=https"}
        assert via_proxy.get("/me", headers=forwarded).status_code == 200
        assert via_proxy.get("/me", headers=key(reader)).status_code == 400
        http = {**key(reader), "X-Forwarded-Proto": "http"}
        assert via_proxy.get("/me", headers=http).status_code == 400
    with TestClient(app, client=("203.0.113.9", 41000)) as direct:
        assert direct.get("/me", headers=https).status_code == 400


def test_one_authenticator_serves_successive_test_clients(store: MemoryKeyStore) -> None:
    counting = AsyncGatedStore()
    keys = [counting.create(f"k{i}", ["items:read"]) for i in range(4)]
    auth = APIKeyAuth(counting)
    app = make_fastapi(auth)
    with TestClient(app) as first:
        assert first.get("/me", headers=key(keys[0])).json()["display_name"] == "k0"
    with TestClient(app) as second:  # a new event loop
        assert second.get("/me", headers=key(keys[1])).json()["display_name"] == "k1"
        assert second.get("/me", headers=key(keys[0])).status_code == 200
    # Without `with`, every request runs on an event loop of its own.
    third = TestClient(app)
    assert third.get("/me", headers=key(keys[2])).status_code == 200
    assert third.get("/me", headers=key(keys[3])).status_code == 200
    assert third.get("/me", headers=key(keys[0])).status_code == 200
    third.close()
    assert counting.lookups == 4  # one per key; the rest were cache hits


# -- the middleware as a plain ASGI callable -------------------------------------------


async def _ok_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = json.dumps({"subject": scope["auth"].subject}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _http_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/items",
        "raw_path": b"/items",
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }


def test_concurrent_requests_share_one_lookup() -> None:
    store = AsyncGatedStore()
    issued = store.create("svc", ["items:read"], subject="svc")
    mw = AuthMiddleware(_ok_app, authenticators=[APIKeyAuth(store)])

    async def one() -> list[dict[str, Any]]:
        rec = ASGIRecorder([{"type": "http.request", "body": b"", "more_body": False}])
        await mw(_http_scope([(b"x-api-key", issued.key.encode())]), rec.receive, rec.send)
        return rec.sent

    async def main() -> list[list[dict[str, Any]]]:
        store.release = asyncio.Event()
        tasks = [asyncio.create_task(one()) for _ in range(20)]
        for _ in range(100):  # bounded: let every task reach its first suspension
            await asyncio.sleep(0)
            if store.lookups:
                break
        for _ in range(5):
            await asyncio.sleep(0)
        assert store.lookups == 1
        store.release.set()
        return await asyncio.gather(*tasks)

    results = asyncio.run(main())
    assert [r[0]["status"] for r in results] == [200] * 20
    assert {r[1]["body"] for r in results} == {b'{"subject": "svc"}'}
    assert store.lookups == 1


def test_unknown_keys_are_remembered_briefly() -> None:
    store = CountingStore()
    stranger = MemoryKeyStore().create("elsewhere")  # well formed, but not in `store`
    app = make_fastapi(APIKeyAuth(store))
    with TestClient(app) as client:
        for _ in range(5):
            assert client.get("/me", headers=key(stranger)).status_code == 401
    assert store.lookups == 1


# -- served under a prefix -------------------------------------------------------------


def test_rules_match_the_routed_path_under_root_path(
    store: MemoryKeyStore, reader: IssuedKey
) -> None:
    """`uvicorn --root-path /api` puts the prefix in `scope["path"]`; rules still apply."""
    app = make_fastapi(APIKeyAuth(store), rules=[Rule("/admin", scopes=["admin"])])
    with TestClient(app, root_path="/api") as client:
        denied = client.get("/api/admin", headers=key(reader))
        assert denied.status_code == 403
        assert 'scope="admin"' in denied.headers["www-authenticate"]
        assert client.get("/api/health").status_code == 200
        assert client.get("/api/me").status_code == 401
        assert client.get("/api/me", headers=key(reader)).json()["subject"] == "alice"


def test_rules_match_inside_a_mounted_app(store: MemoryKeyStore, reader: IssuedKey) -> None:
    sub = make_starlette(APIKeyAuth(store), rules=[Rule("/admin", scopes=["admin"])])
    outer = Starlette(routes=[Mount("/v1", app=sub)])
    with TestClient(outer) as client:
        assert client.get("/v1/admin", headers=key(reader)).status_code == 403
        assert client.get("/v1/health").status_code == 200
        assert client.get("/v1/items").status_code == 401
        assert client.get("/v1/items", headers=key(reader)).json() == ["a", "b"]

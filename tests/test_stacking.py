"""AuthMiddleware stacked with Starlette's CORSMiddleware and GZipMiddleware."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from asgi_auth import APIKeyAuth, AuthMiddleware
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.base import IssuedKey

ORIGIN = "https://app.example"
BIG_TEXT = "".join(f"line {i}: the quick brown fox jumps over the lazy dog\n" for i in range(4000))
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "GET",
    "Access-Control-Request-Headers": "X-API-Key",
}


async def items(request: Request) -> JSONResponse:
    return JSONResponse({"subject": request.user.identity.subject, "method": request.method})


async def big(request: Request) -> PlainTextResponse:
    return PlainTextResponse(BIG_TEXT)


ROUTES = [Route("/items", items, methods=["GET", "POST", "OPTIONS"]), Route("/big", big)]


def cors() -> Middleware:
    return Middleware(
        CORSMiddleware,
        allow_origins=[ORIGIN],
        allow_methods=["GET", "POST"],
        allow_headers=["X-API-Key", "Authorization"],
    )


def auth(store: MemoryKeyStore, **options: Any) -> Middleware:
    return Middleware(AuthMiddleware, authenticators=[APIKeyAuth(store)], **options)


def app_with(*middleware: Middleware) -> Starlette:
    """`middleware[0]` is the outermost, as in Starlette's `middleware=` list."""
    return Starlette(routes=ROUTES, middleware=list(middleware))


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def issued(store: MemoryKeyStore) -> IssuedKey:
    return store.create("browser", ["items:read"], subject="alice")


# -- Auth outside CORS -----------------------------------------------------------------


def test_preflight_passes_when_auth_is_outside_cors(store: MemoryKeyStore) -> None:
    with TestClient(app_with(auth(store), cors())) as client:
        resp = client.options("/items", headers=PREFLIGHT)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ORIGIN
    assert "GET" in resp.headers["access-control-allow-methods"]
    assert "x-api-key" in resp.headers["access-control-allow-headers"].lower()


def test_plain_options_still_needs_auth(store: MemoryKeyStore, issued: IssuedKey) -> None:
    with TestClient(app_with(auth(store), cors())) as client:
        # OPTIONS without Access-Control-Request-Method is not a preflight.
        plain = client.options("/items", headers={"Origin": ORIGIN})
        assert plain.status_code == 401
        assert plain.headers["www-authenticate"].startswith("ApiKey ")
        # The preflight header on another method buys nothing.
        sneaky = client.get("/items", headers=PREFLIGHT)
        assert sneaky.status_code == 401
        ok = client.options("/items", headers={"Origin": ORIGIN, "X-API-Key": issued.key})
        assert ok.status_code == 200
        assert ok.json() == {"subject": "alice", "method": "OPTIONS"}
        actual = client.get("/items", headers={"Origin": ORIGIN, "X-API-Key": issued.key})
        assert actual.status_code == 200
        assert actual.headers["access-control-allow-origin"] == ORIGIN


def test_preflight_with_a_bad_key_is_refused(store: MemoryKeyStore) -> None:
    with TestClient(app_with(auth(store), cors())) as client:
        resp = client.options("/items", headers={**PREFLIGHT, "X-API-Key": "agk_bogus"})
    assert resp.status_code == 401


def test_preflight_refused_when_allow_cors_preflight_is_off(store: MemoryKeyStore) -> None:
    app = app_with(auth(store, allow_cors_preflight=False), cors())
    with TestClient(app) as client:
        resp = client.options("/items", headers=PREFLIGHT)
    assert resp.status_code == 401
    assert "access-control-allow-origin" not in resp.headers


# -- CORS outside Auth -----------------------------------------------------------------


def test_401_carries_cors_headers_when_cors_is_outermost(
    store: MemoryKeyStore, issued: IssuedKey
) -> None:
    with TestClient(app_with(cors(), auth(store))) as client:
        denied = client.get("/items", headers={"Origin": ORIGIN})
        assert denied.status_code == 401
        # The browser can read the error because CORS decorated it.
        assert denied.headers["access-control-allow-origin"] == ORIGIN
        assert denied.json()["error"] == "unauthorized"
        assert "www-authenticate" in denied.headers

        ok = client.get("/items", headers={"Origin": ORIGIN, "X-API-Key": issued.key})
        assert ok.status_code == 200
        assert ok.headers["access-control-allow-origin"] == ORIGIN


def test_outermost_cors_answers_preflight_itself(store: MemoryKeyStore) -> None:
    app = app_with(cors(), auth(store, allow_cors_preflight=False))
    with TestClient(app) as client:
        resp = client.options("/items", headers=PREFLIGHT)
    assert resp.status_code == 200
    assert resp.headers["access-control-allow-origin"] == ORIGIN


# -- GZip ------------------------------------------------------------------------------


@pytest.mark.parametrize("gzip_outside", [True, False], ids=["gzip-outside", "auth-outside"])
def test_gzip_compresses_authenticated_responses(
    store: MemoryKeyStore, issued: IssuedKey, gzip_outside: bool
) -> None:
    gzip = Middleware(GZipMiddleware, minimum_size=500)
    stack = (gzip, auth(store)) if gzip_outside else (auth(store), gzip)
    with TestClient(app_with(*stack)) as client:
        resp = client.get("/big", headers={"X-API-Key": issued.key, "Accept-Encoding": "gzip"})
        assert resp.status_code == 200
        assert resp.headers["content-encoding"] == "gzip"
        assert int(resp.headers["content-length"]) < len(BIG_TEXT) // 4
        assert resp.text == BIG_TEXT  # the client decompressed it: the bytes are intact

        denied = client.get("/big", headers={"Accept-Encoding": "gzip"})
        assert denied.status_code == 401
        assert denied.json()["error"] == "unauthorized"
        assert int(denied.headers["content-length"]) == len(denied.content)


def test_full_stack_cors_gzip_auth(store: MemoryKeyStore, issued: IssuedKey) -> None:
    gzip = Middleware(GZipMiddleware, minimum_size=500)
    with TestClient(app_with(cors(), gzip, auth(store))) as client:
        assert client.options("/big", headers=PREFLIGHT).status_code == 200
        resp = client.get(
            "/big",
            headers={"Origin": ORIGIN, "X-API-Key": issued.key, "Accept-Encoding": "gzip"},
        )
        assert resp.status_code == 200
        assert resp.headers["content-encoding"] == "gzip"
        assert resp.headers["access-control-allow-origin"] == ORIGIN
        assert resp.text == BIG_TEXT
        denied = client.get("/big", headers={"Origin": ORIGIN})
        assert denied.status_code == 401
        assert denied.headers["access-control-allow-origin"] == ORIGIN

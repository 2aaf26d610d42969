"""Caller-side auth classes against real servers on 127.0.0.1, through each of the four
clients users have: httpx2 and httpx, sync and async."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth import APIKeyAuth, AuthMiddleware, JWTAuth
from asgi_auth.client import APIKey, ClientCredentials, DPoPKey, TokenError, _origin, pkce_pair
from asgi_auth.keys import MemoryKeyStore
from tests.idp import IdP, running_idp
from tests.servers import Server


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as server:
        server.add_key("ES256")
        yield server


LIBS: dict[str, Any] = {"httpx2": httpx2, "httpx": httpx}
CLIENTS = [
    pytest.param(lib, mode, id=f"{lib}-{mode}") for lib in LIBS for mode in ("sync", "async")
]


def get_all(
    lib: str, mode: str, auth: Any, urls: list[str], *, together: bool = False
) -> list[Any]:
    """GET each URL with `auth` through one client of library `lib`, sync or async
    (`together`: all at once); checks each answer came through that very library."""
    mod = LIBS[lib]
    if mode == "sync":
        with mod.Client(auth=auth, timeout=10) as c:
            responses = [c.get(u) for u in urls]
    else:

        async def main() -> list[Any]:
            async with mod.AsyncClient(auth=auth, timeout=10) as c:
                if together:
                    return list(await asyncio.gather(*(c.get(u) for u in urls)))
                return [await c.get(u) for u in urls]

        responses = asyncio.run(main())
    for r in responses:
        assert isinstance(r, mod.Response)
    return responses


def _app(*authenticators: Any) -> AuthMiddleware:
    async def me(request: Request) -> JSONResponse:
        i = request.auth
        return JSONResponse(
            {
                "sub": i.subject,
                "jkt": i.dpop_jkt,
                "scopes": sorted(i.scopes),
                "agent": request.headers.get("user-agent", ""),
            }
        )

    return AuthMiddleware(Starlette(routes=[Route("/me", me)]), authenticators=list(authenticators))


def test_pkce_pair() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode()
    assert pkce_pair()[0] != verifier


def test_auth_objects_are_auth_for_both_libraries() -> None:
    for auth in (APIKey("k"), ClientCredentials("https://idp.example/token", "svc", "s")):
        assert isinstance(auth, httpx2.Auth)
        assert isinstance(auth, httpx.Auth)


def test_origin_drops_default_ports() -> None:
    assert _origin("https://API.example:443/x") == _origin("https://api.example/y")
    assert _origin("http://127.0.0.1:80/") == "http://127.0.0.1:"
    assert _origin("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"
    assert _origin("https://a.example:80/") != _origin("https://a.example/")


@pytest.mark.parametrize(("lib", "mode"), CLIENTS)
def test_api_key_auth(lib: str, mode: str) -> None:
    store = MemoryKeyStore()
    issued = store.create("caller", ["read"])
    app = _app(APIKeyAuth(store, scheme="ApiKey"))
    with Server(app) as base:
        header, scheme, none = (
            get_all(lib, mode, auth, [base + "/me"])[0]
            for auth in (APIKey(issued.key), APIKey(issued.key, scheme="ApiKey"), None)
        )
    assert header.status_code == 200
    assert header.json()["sub"] == issued.record.key_id
    assert header.json()["agent"].startswith(f"python-{lib}/")
    assert scheme.status_code == 200
    assert scheme.json()["sub"] == issued.record.key_id
    assert none.status_code == 401
    assert issued.key not in repr(APIKey(issued.key))


@pytest.mark.parametrize(("lib", "mode"), CLIENTS)
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_fetches_caches_and_refreshes(
    idp: IdP, method: Any, lib: str, mode: str
) -> None:
    clock_now = [time.time()]
    auth = ClientCredentials(
        idp.issuer + "/token",
        "svc",
        "svc-secret",
        scope="read",
        auth_method=method,
        clock=lambda: clock_now[0],
    )
    app = _app(JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri))
    with Server(app) as base:
        for r in get_all(lib, mode, auth, [base + "/me"] * 3):
            assert r.status_code == 200
            assert r.json()["scopes"] == ["read"]
            assert r.json()["agent"].startswith(f"python-{lib}/")
        assert idp.token_requests == 1
        clock_now[0] += idp.token_lifetime - 10  # within refresh_before of expiry
        assert get_all(lib, mode, auth, [base + "/me"])[0].status_code == 200
        assert idp.token_requests == 2


@pytest.mark.parametrize(("lib", "mode"), CLIENTS)
def test_client_credentials_retries_once_on_401(idp: IdP, lib: str, mode: str) -> None:
    auth = ClientCredentials(idp.issuer + "/token", "svc", "svc-secret")
    app = _app(
        JWTAuth(
            idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, required_claims=["jti"]
        )
    )
    with Server(app) as base:
        (r,) = get_all(lib, mode, auth, [base + "/me"])
    assert r.status_code == 401  # tokens lack jti: the API refuses, one retry, still 401
    assert idp.token_requests == 2


@pytest.mark.parametrize(("lib", "mode"), CLIENTS)
def test_client_credentials_with_dpop(idp: IdP, lib: str, mode: str) -> None:
    key = DPoPKey()
    auth = ClientCredentials(idp.issuer + "/token", "svc", "svc-secret", dpop=key)
    app = _app(JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri))
    with Server(app) as base:
        rs = get_all(lib, mode, auth, [base + "/me"] * 3)
        rs += get_all(lib, mode, auth, [base + "/me"] * 5, together=True)
    for r in rs:
        assert r.status_code == 200, r.text
        assert r.json()["jkt"] == key.thumbprint
    assert idp.token_requests == 1


@pytest.mark.parametrize(("lib", "mode"), CLIENTS)
def test_dpop_nonce_from_the_token_endpoint(idp: IdP, lib: str, mode: str) -> None:
    idp.token_nonce = "server-nonce-1"
    auth = ClientCredentials(idp.issuer + "/token", "svc", "svc-secret", dpop=True)
    app = _app(JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri))
    with Server(app) as base:
        assert get_all(lib, mode, auth, [base + "/me"])[0].status_code == 200
    assert idp.token_requests == 2


@pytest.mark.parametrize(("lib", "mode"), CLIENTS)
def test_token_endpoint_refusal_is_a_clear_error(idp: IdP, lib: str, mode: str) -> None:
    auth = ClientCredentials(idp.issuer + "/token", "svc", "wrong-secret")
    with pytest.raises(TokenError, match="401 invalid_client"):
        get_all(lib, mode, auth, [idp.issuer + "/jwks"])
    assert "wrong-secret" not in repr(auth)

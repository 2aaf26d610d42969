"""Caller-side httpx.Auth classes against real servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth import APIKeyAuth, AuthMiddleware, JWTAuth
from asgi_auth.client import APIKey, ClientCredentials, DPoPKey, TokenError, pkce_pair
from asgi_auth.keys import MemoryKeyStore
from tests.idp import IdP, running_idp
from tests.servers import Server


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as server:
        server.add_key("ES256")
        yield server


def _app(*authenticators: Any) -> AuthMiddleware:
    async def me(request: Request) -> JSONResponse:
        i = request.auth
        return JSONResponse({"sub": i.subject, "jkt": i.dpop_jkt, "scopes": sorted(i.scopes)})

    return AuthMiddleware(Starlette(routes=[Route("/me", me)]), authenticators=list(authenticators))


def test_pkce_pair() -> None:
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert re.fullmatch(r"[A-Za-z0-9\-._~]+", verifier)
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    assert challenge == digest.decode()
    assert pkce_pair()[0] != verifier


def test_api_key_auth_sync_and_async() -> None:
    store = MemoryKeyStore()
    issued = store.create("caller", ["read"])
    app = _app(APIKeyAuth(store, scheme="ApiKey"))
    with Server(app) as base:
        assert httpx.get(base + "/me", auth=APIKey(issued.key)).status_code == 200
        r = httpx.get(base + "/me", auth=APIKey(issued.key, scheme="ApiKey"))
        assert r.json()["sub"] == issued.record.key_id
        assert httpx.get(base + "/me").status_code == 401

        async def main() -> int:
            async with httpx.AsyncClient(auth=APIKey(issued.key)) as c:
                return (await c.get(base + "/me")).status_code

        assert asyncio.run(main()) == 200
    assert issued.key not in repr(APIKey(issued.key))


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_fetches_caches_and_refreshes(idp: IdP, method: Any) -> None:
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
    with Server(app) as base, httpx.Client(auth=auth) as c:
        for _ in range(3):
            r = c.get(base + "/me")
            assert r.status_code == 200
            assert r.json()["scopes"] == ["read"]
        assert idp.token_requests == 1
        clock_now[0] += idp.token_lifetime - 10  # within refresh_before of expiry
        assert c.get(base + "/me").status_code == 200
        assert idp.token_requests == 2


def test_client_credentials_retries_once_on_401(idp: IdP) -> None:
    auth = ClientCredentials(idp.issuer + "/token", "svc", "svc-secret")
    app = _app(
        JWTAuth(
            idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, required_claims=["jti"]
        )
    )
    with Server(app) as base, httpx.Client(auth=auth) as c:
        r = c.get(base + "/me")  # tokens lack jti: the API refuses, one retry, still 401
        assert r.status_code == 401
        assert idp.token_requests == 2


def test_client_credentials_with_dpop_sync_and_async(idp: IdP) -> None:
    key = DPoPKey()
    auth = ClientCredentials(idp.issuer + "/token", "svc", "svc-secret", dpop=key)
    app = _app(JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri))
    with Server(app) as base:
        with httpx.Client(auth=auth) as c:
            for _ in range(3):
                r = c.get(base + "/me")
                assert r.status_code == 200, r.text
                assert r.json()["jkt"] == key.thumbprint

        async def main() -> list[int]:
            async with httpx.AsyncClient(auth=auth) as c:
                rs = await asyncio.gather(*(c.get(base + "/me") for _ in range(5)))
            return [r.status_code for r in rs]

        assert asyncio.run(main()) == [200] * 5
    assert idp.token_requests == 1


def test_dpop_nonce_from_the_token_endpoint(idp: IdP) -> None:
    idp.token_nonce = "server-nonce-1"
    auth = ClientCredentials(idp.issuer + "/token", "svc", "svc-secret", dpop=True)
    app = _app(JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri))
    with Server(app) as base, httpx.Client(auth=auth) as c:
        assert c.get(base + "/me").status_code == 200
    assert idp.token_requests == 2


def test_token_endpoint_refusal_is_a_clear_error(idp: IdP) -> None:
    auth = ClientCredentials(idp.issuer + "/token", "svc", "wrong-secret")
    with httpx.Client(auth=auth) as c, pytest.raises(TokenError, match="401 invalid_client"):
        c.get(idp.issuer + "/jwks")
    assert "wrong-secret" not in repr(auth)

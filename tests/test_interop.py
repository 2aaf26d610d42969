"""authgate against a real OpenID provider (oidc-provider 8, Node.js) on 127.0.0.1.

The provider issues the tokens (client credentials, RFC 8707 resources, DPoP); the
caller-side classes fetch them; the API under test is a Starlette app behind
AuthMiddleware, served by uvicorn on loopback.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth import AuthMiddleware, IntrospectionAuth, JWTAuth
from asgi_auth.client import ClientCredentials, DPoPKey
from tests.dpop_client import DPoPKey as RawDPoPKey
from tests.oidc_provider import (
    RESOURCE_JWT,
    RESOURCE_JWT_EDDSA,
    RESOURCE_JWT_ES256,
    RESOURCE_OPAQUE,
    SVC_POST,
    OIDCProvider,
    running_provider,
)
from tests.servers import Server


class Clock:
    offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture(scope="module")
def op() -> Iterator[OIDCProvider]:
    with running_provider() as provider:
        yield provider


@pytest.fixture(scope="module")
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="module")
def api(op: OIDCProvider, clock: Clock) -> Iterator[str]:
    async def me(request: Request) -> JSONResponse:
        i = request.auth
        return JSONResponse(
            {
                "sub": i.subject,
                "method": i.method,
                "scopes": sorted(i.scopes),
                "jkt": i.dpop_jkt,
                "client_id": i.client_id,
            }
        )

    app = AuthMiddleware(
        Starlette(routes=[Route("/me", me, methods=["GET", "POST"])]),
        authenticators=[
            JWTAuth(
                op.issuer,
                [RESOURCE_JWT, RESOURCE_JWT_ES256, RESOURCE_JWT_EDDSA],
                algorithms=["RS256", "ES256", "EdDSA"],
                typ="at+jwt",
                clock=clock,
            ),
            IntrospectionAuth(
                issuer=op.issuer,
                client_id="rs",
                client_secret="rs-secret",
                cache_ttl=60,
                clock=clock,
            ),
        ],
    )
    with Server(app) as base:
        yield base


def creds(op: OIDCProvider, resource: str, **kw: Any) -> ClientCredentials:
    return ClientCredentials(
        op.token_endpoint, "svc", "svc-secret", scope="read write", resource=resource, **kw
    )


@pytest.mark.parametrize("resource", [RESOURCE_JWT, RESOURCE_JWT_ES256, RESOURCE_JWT_EDDSA])
def test_jwt_access_tokens_via_discovery(op: OIDCProvider, api: str, resource: str) -> None:
    with httpx2.Client(auth=creds(op, resource)) as c:
        r = c.get(api + "/me")
    assert r.status_code == 200, r.text
    assert r.json() == {
        "sub": "svc",
        "method": "jwt",
        "scopes": ["read", "write"],
        "jkt": None,
        "client_id": "svc",
    }


def test_opaque_tokens_via_introspection(op: OIDCProvider, api: str) -> None:
    auth = ClientCredentials(
        op.token_endpoint,
        *SVC_POST,
        scope="read",
        resource=RESOURCE_OPAQUE,
        auth_method="client_secret_post",
    )
    with httpx2.Client(auth=auth) as c:
        r = c.get(api + "/me")
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "introspection"
    assert r.json()["client_id"] == "svc-post"
    assert r.json()["scopes"] == ["read"]


def test_revoked_token_is_refused_after_the_cache_allows(
    op: OIDCProvider, api: str, clock: Clock
) -> None:
    token = op.client_credentials_token(resource=RESOURCE_OPAQUE)["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    assert httpx2.get(api + "/me", headers=headers).status_code == 200
    op.revoke(token)
    assert httpx2.get(api + "/me", headers=headers).status_code == 200  # cached (cache_ttl=60)
    clock.offset += 61
    try:
        r = httpx2.get(api + "/me", headers=headers)
    finally:
        clock.offset -= 61
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_dpop_bound_tokens(op: OIDCProvider, api: str) -> None:
    key = DPoPKey()
    with httpx2.Client(auth=creds(op, RESOURCE_JWT, dpop=key)) as c:
        for _ in range(2):
            r = c.get(api + "/me")
            assert r.status_code == 200, r.text
            assert r.json()["jkt"] == key.thumbprint

    raw = RawDPoPKey()
    answer = op.client_credentials_token(
        resource=RESOURCE_JWT, dpop_proof=raw.proof("POST", op.token_endpoint)
    )
    assert answer["token_type"] == "DPoP"
    token = answer["access_token"]
    url = api + "/me"
    dpop = {"Authorization": f"DPoP {token}"}

    def get(headers: dict[str, str], method: str = "GET") -> int:
        return httpx2.request(method, url, headers=headers).status_code

    assert get({**dpop, "DPoP": raw.proof("GET", url, token)}) == 200
    assert get(dpop) == 401  # no proof
    assert get({"Authorization": f"Bearer {token}"}) == 401  # as Bearer (RFC 9449 §7.1)
    proof = raw.proof("GET", url, token)
    assert get({**dpop, "DPoP": proof}) == 200
    assert get({**dpop, "DPoP": proof}) == 401  # replayed
    assert get({**dpop, "DPoP": raw.proof("POST", url, token)}) == 401  # wrong htm
    assert get({**dpop, "DPoP": raw.proof("GET", api + "/other", token)}) == 401  # wrong htu
    assert get({**dpop, "DPoP": raw.proof("GET", url, token + "x")}) == 401  # wrong ath
    assert get({**dpop, "DPoP": RawDPoPKey().proof("GET", url, token)}) == 401  # other key
    assert get({**dpop, "DPoP": raw.proof("POST", url, token)}, "POST") == 200


def test_dpop_bound_opaque_token(op: OIDCProvider, api: str) -> None:
    key = DPoPKey()
    with httpx2.Client(auth=creds(op, RESOURCE_OPAQUE, dpop=key)) as c:
        r = c.get(api + "/me")
    assert r.status_code == 200, r.text
    assert r.json()["method"] == "introspection"
    assert r.json()["jkt"] == key.thumbprint


def test_key_rotation_is_picked_up(op: OIDCProvider, api: str) -> None:
    before = op.client_credentials_token(resource=RESOURCE_JWT)["access_token"]
    assert httpx2.get(api + "/me", headers={"Authorization": f"Bearer {before}"}).status_code == 200
    op.rotate(keep_old=False)
    after = op.client_credentials_token(resource=RESOURCE_JWT)["access_token"]
    assert httpx2.get(api + "/me", headers={"Authorization": f"Bearer {after}"}).status_code == 200


def test_wrong_audience_is_refused(op: OIDCProvider, api: str) -> None:
    # A JWT whose aud (the API URL) is not among the audiences the API accepts.
    token = op.client_credentials_token(resource=api + "/")["access_token"]
    r = httpx2.get(api + "/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401
    assert "invalid audience" in r.headers["www-authenticate"]

"""IntrospectionAuth against a real RFC 7662 endpoint on 127.0.0.1, plus fault injection."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from asgi_auth import AuthMiddleware, IntrospectionAuth, JWTAuth
from asgi_auth.authenticator import RequestInfo
from asgi_auth.errors import AuthError
from asgi_auth.flow import SyncDriver
from tests.idp import IdP, running_idp

REQ = RequestInfo("GET", "/", "http", "127.0.0.1")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as server:
        yield server


def active(idp: IdP, token: str, **extra: Any) -> None:
    now = int(time.time())
    idp.introspection[token] = {
        "active": True,
        "scope": "read write",
        "client_id": "svc",
        "sub": "user-9",
        "exp": now + 600,
        "iss": idp.issuer,
        "token_type": "Bearer",
        **extra,
    }


def auth_for(idp: IdP, **kw: Any) -> IntrospectionAuth:
    kw.setdefault("endpoint", idp.issuer + "/introspect")
    return IntrospectionAuth(client_id="rs", client_secret="rs-secret", **kw)


def check(auth: IntrospectionAuth, token: str) -> Any:
    hit = auth.cached(token)
    return hit if hit is not None else SyncDriver().run(auth.flow(token, REQ))


def failure(auth: IntrospectionAuth, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        check(auth, token)
    return info.value


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_active_token_and_client_authentication(idp: IdP, method: str) -> None:
    active(idp, "opaque-1")
    auth = auth_for(idp, auth_method=method)
    ident = check(auth, "opaque-1")
    assert ident.subject == "user-9"
    assert ident.scopes == {"read", "write"}
    assert ident.client_id == "svc"
    assert ident.method == "introspection"
    assert idp.last_introspection["form"]["token"] == "opaque-1"
    assert idp.last_introspection["form"]["token_type_hint"] == "access_token"
    if method == "client_secret_basic":
        assert idp.last_introspection["auth"].startswith("Basic ")
        assert "client_secret" not in idp.last_introspection["form"]
    else:
        assert idp.last_introspection["auth"] is None
        assert idp.last_introspection["form"]["client_secret"] == "rs-secret"


def test_endpoint_from_discovery(idp: IdP) -> None:
    active(idp, "opaque-2")
    auth = IntrospectionAuth(issuer=idp.issuer, client_id="rs", client_secret="rs-secret")
    assert check(auth, "opaque-2").subject == "user-9"


def test_subject_falls_back_to_client_id(idp: IdP) -> None:
    active(idp, "machine", sub=None)
    assert check(auth_for(idp), "machine").subject == "svc"


def test_cache_until_exp_or_ttl_and_inactive_briefly(idp: IdP) -> None:
    clock = Clock()
    exp = int(clock.now) + 100
    active(idp, "t", exp=exp)
    auth = auth_for(idp, cache_ttl=300, negative_ttl=10, clock=clock)
    check(auth, "t")
    check(auth, "t")
    assert idp.introspections == 1
    clock.now = exp + 1  # exp comes before cache_ttl: the cache lets go at exp
    assert auth.cached("t") is None
    assert failure(auth, "t").description == "token expired"

    for _ in range(5):
        assert failure(auth, "unknown").description == "token is not active"
    assert idp.introspections == 3  # one for the expired re-check, one for the inactive
    clock.now += 11
    failure(auth, "unknown")
    assert idp.introspections == 4


def test_revoked_token_is_refused_once_the_cache_allows(idp: IdP) -> None:
    clock = Clock()
    active(idp, "r")
    auth = auth_for(idp, cache_ttl=30, clock=clock)
    assert check(auth, "r").subject == "user-9"
    idp.introspection["r"] = {"active": False}  # revoked at the server
    assert check(auth, "r").subject == "user-9"  # still inside cache_ttl
    clock.now += 31
    assert failure(auth, "r").status == 401


@pytest.mark.parametrize(
    ("extra", "description"),
    [
        ({"exp": -5}, "token expired"),  # times: seconds from the test's clock
        ({"nbf": 300}, "token not yet valid"),
        ({"iss": "https://other.example"}, "invalid issuer"),
        ({"aud": "someone-else"}, "invalid audience"),
        ({"token_type": "refresh_token"}, "not an access token"),
        ({"sub": None, "client_id": None}, "token has no subject"),
    ],
)
def test_answer_fields_are_checked(idp: IdP, extra: dict[str, Any], description: str) -> None:
    clock = Clock()  # a test clock that does not move
    # Times are made when the test runs, from its own clock: made at collection, they
    # went stale once the suite took longer than their margin to get here.
    extra = {k: int(clock.now) + v if k in ("exp", "nbf") else v for k, v in extra.items()}
    active(idp, "x", **extra)
    auth = auth_for(idp, issuer=idp.issuer, audience="api", clock=clock)
    if "aud" not in extra:
        idp.introspection["x"]["aud"] = ["api", "other"]
    err = failure(auth, "x")
    assert err.status == 401
    assert err.description == description


@pytest.mark.parametrize("mode", ["500", "garbage", "nested", "string-true", "stall"])
def test_faults_are_503_never_a_pass(idp: IdP, mode: str) -> None:
    active(idp, "f")
    idp.introspect_mode = mode
    auth = auth_for(idp, timeout=0.5)
    err = failure(auth, "f")
    assert err.status == 503
    assert dict(err.headers([]))["Retry-After"]
    idp.stall_event.set()


def test_wrong_client_credentials_are_503(idp: IdP) -> None:
    active(idp, "w")
    auth = IntrospectionAuth(
        endpoint=idp.issuer + "/introspect", client_id="rs", client_secret="wrong"
    )
    assert failure(auth, "w").status == 503


def test_tokens_never_go_over_plain_http_except_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        IntrospectionAuth(
            endpoint="http://idp.example/introspect", client_id="a", client_secret="b"
        )
    with pytest.raises(ValueError):
        IntrospectionAuth(client_id="a", client_secret="b")


def test_secret_stays_out_of_repr() -> None:
    auth = IntrospectionAuth(
        endpoint="https://idp.example/i", client_id="a", client_secret="s3cr3t-value"
    )
    assert "s3cr3t" not in repr(auth)
    assert "s3cr3t" not in repr(vars(auth).get("challenge"))


def _app() -> Starlette:
    async def me(request: Request) -> JSONResponse:
        ident = request.auth
        return JSONResponse({"sub": ident.subject, "method": ident.method})

    return Starlette(routes=[Route("/me", me)])


def test_jwts_verified_locally_and_the_rest_introspected(idp: IdP) -> None:
    idp.add_key("ES256")
    active(idp, "opaque-token")
    app = AuthMiddleware(
        _app(),
        authenticators=[auth_for(idp), JWTAuth(idp.issuer, "api", algorithms=["ES256"])],
    )
    with TestClient(app) as c:
        jwt = c.get("/me", headers={"Authorization": f"Bearer {idp.token()}"})
        opaque = c.get("/me", headers={"Authorization": "Bearer opaque-token"})
        bad = c.get("/me", headers={"Authorization": "Bearer nope"})
    assert jwt.json() == {"sub": "user-1", "method": "jwt"}
    assert opaque.json() == {"sub": "user-9", "method": "introspection"}
    assert bad.status_code == 401
    assert idp.introspections == 2  # the JWT was never sent to the server


def test_concurrent_requests_for_one_token_introspect_once(idp: IdP) -> None:
    active(idp, "c")
    app = AuthMiddleware(_app(), authenticators=[auth_for(idp)])

    async def main() -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
            rs = await asyncio.gather(
                *(client.get("/me", headers={"Authorization": "Bearer c"}) for _ in range(50))
            )
        return [r.status_code for r in rs]

    assert asyncio.run(main()) == [200] * 50
    assert idp.introspections == 1

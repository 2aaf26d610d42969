"""Regressions for defects found in review: each would let a request through, answer 500,
or answer differently depending on earlier requests."""

from __future__ import annotations

import logging
import time
from typing import Any

import jwt
import pytest
from starlette.applications import Starlette
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from asgi_auth import APIKeyAuth, AuthMiddleware, IntrospectionAuth, JWTAuth, Rule
from asgi_auth.dpop import DPoPVerifier
from asgi_auth.gate import _forwarded_proto
from asgi_auth.keys import MemoryKeyStore
from tests.dpop_client import DPoPKey
from tests.helpers_core import make_client

SECRET = b"s" * 32


def _store() -> tuple[MemoryKeyStore, str]:
    store = MemoryKeyStore()
    return store, store.create("reader", ["items:read"]).key


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("reached")


RULES = [
    Rule("/items", methods=["GET"], scopes=["items:read"]),
    Rule("/items", methods=["POST"], scopes=["items:write"]),
]


def test_lowercase_method_meets_the_uppercase_rule() -> None:
    store, key = _store()
    for kind in ("asgi", "wsgi"):
        client = make_client(kind, [APIKeyAuth(store)], rules=RULES)
        for method in ("POST", "post", "Post"):
            reply = client("/items", method=method, headers=[("X-API-Key", key)])
            assert reply.status == 403, (kind, method)
            assert not reply.reached


def test_preflight_without_origin_is_not_let_through() -> None:
    store, _ = _store()
    inner = CORSMiddleware(
        Starlette(routes=[Route("/items", _ok, methods=["GET", "OPTIONS"])]),
        allow_origins=["https://app.example"],
        allow_methods=["*"],
    )
    app = AuthMiddleware(inner, authenticators=[APIKeyAuth(store)])
    with TestClient(app) as c:
        fake = c.options("/items", headers={"Access-Control-Request-Method": "DELETE"})
        assert fake.status_code == 401
        real = c.options(
            "/items",
            headers={"Access-Control-Request-Method": "GET", "Origin": "https://app.example"},
        )
        assert real.status_code == 200
        assert real.headers["access-control-allow-origin"] == "https://app.example"


def _jwt_app(**kw: Any) -> TestClient:
    auth = JWTAuth("svc", "api", algorithms=["HS256"], keys=SECRET, **kw)
    app = Starlette(routes=[Route("/items", _ok, methods=["GET", "POST"])])
    return TestClient(AuthMiddleware(app, authenticators=[auth], rules=RULES))


def _token(**claims: Any) -> str:
    body = {"iss": "svc", "aud": "api", "sub": "s", "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(body, SECRET, algorithm="HS256")


def test_bad_host_or_htu_port_is_401_not_500() -> None:
    key = DPoPKey()
    token = _token(cnf={"jkt": key.jkt}, scope="items:read")
    with _jwt_app() as c:
        for host, htu in (
            ("testserver:abc", "http://testserver/items"),
            ("testserver", "http://testserver:99999/items"),
        ):
            r = c.get(
                "/items",
                headers={
                    "Host": host,
                    "Authorization": f"DPoP {token}",
                    "DPoP": key.proof("GET", htu, token),
                },
            )
            assert r.status_code == 401
            assert 'error="invalid_dpop_proof"' in r.headers["www-authenticate"]


def test_insufficient_scope_lands_on_the_scheme_used() -> None:
    key = DPoPKey()
    token = _token(cnf={"jkt": key.jkt}, scope="items:read")
    with _jwt_app() as c:
        r = c.post(
            "/items",
            headers={
                "Authorization": f"DPoP {token}",
                "DPoP": key.proof("POST", "http://testserver/items", token),
            },
        )
    assert r.status_code == 403
    bearer, _, dpop = r.headers["www-authenticate"].partition(", DPoP ")
    assert "insufficient_scope" in dpop
    assert "error=" not in bearer


def test_huge_exp_is_401_not_500() -> None:
    with _jwt_app() as c:
        r = c.get("/items", headers={"Authorization": f"Bearer {_token(exp=10**400)}"})
    assert r.status_code == 401


def test_header_memo_does_not_change_answers() -> None:
    store, key = _store()
    app = AuthMiddleware(
        Starlette(routes=[Route("/items", _ok)]),
        authenticators=[APIKeyAuth(store, scheme="ApiKey")],
    )
    with TestClient(app) as c:
        assert c.get("/items", headers={"X-API-Key": f"ApiKey {key}"}).status_code == 400
        assert c.get("/items", headers={"Authorization": f"ApiKey {key}"}).status_code == 200
        assert c.get("/items", headers={"X-API-Key": f"ApiKey {key}"}).status_code == 400


def test_proxy_proto_prefers_x_forwarded_proto() -> None:
    found = {"x-forwarded-proto": "http", "forwarded": "proto=https"}
    assert _forwarded_proto(found) == "http"
    assert _forwarded_proto({"forwarded": "for=1.2.3.4;proto=https"}) == "https"


def test_a_token_query_parameter_is_an_ordinary_parameter() -> None:
    store, key = _store()
    app = AuthMiddleware(
        Starlette(routes=[Route("/items", _ok)]), authenticators=[APIKeyAuth(store)]
    )
    with TestClient(app) as c:
        assert c.get("/items?token=page-2", headers={"X-API-Key": key}).status_code == 200


def test_refused_token_fields_cannot_forge_log_lines(caplog: pytest.LogCaptureFixture) -> None:
    # The log names a refused token's kid and sub: the sender's words. They must not
    # break the line, reach the terminal as escapes, or add a field of their own.
    kid = "k1\nINFO asgi_auth: authentication ok sub=admin"
    sub = "eve sub=admin \x1b[2J"
    forged = jwt.encode(
        {"iss": "svc", "aud": "api", "sub": sub, "exp": int(time.time()) + 3600},
        b"w" * 32,  # not the secret: refused for its signature
        algorithm="HS256",
        headers={"kid": kid},
    )
    auth = JWTAuth("svc", "api", algorithms=["HS256"], keys=SECRET)
    caplog.set_level(logging.INFO)
    for kind in ("asgi", "wsgi"):
        client = make_client(kind, [auth])
        reply = client("/items", headers=[("Authorization", f"Bearer {forged}")])
        assert reply.status == 401 and not reply.reached
    lines = [r.getMessage() for r in caplog.records if "authentication failed" in r.getMessage()]
    assert len(lines) == 2
    for line in lines:
        assert "\n" not in line and "\x1b" not in line
        assert f"kid={kid!r}" in line and f"sub={sub!r}" in line
        assert " sub=admin" not in line.replace(repr(sub), "").replace(repr(kid), "")
        assert "reason=bad_signature" in line and "iss=svc" in line  # plain values stay plain


@pytest.mark.parametrize(
    ("make", "kwargs"),
    [
        (lambda **kw: APIKeyAuth(MemoryKeyStore(), **kw), {"cache_ttl": float("nan")}),
        (lambda **kw: APIKeyAuth(MemoryKeyStore(), **kw), {"negative_ttl": float("nan")}),
        (lambda **kw: APIKeyAuth(MemoryKeyStore(), **kw), {"store_timeout": float("inf")}),
        (
            lambda **kw: IntrospectionAuth(
                endpoint="https://idp.example/introspect", client_id="c", client_secret="s", **kw
            ),
            {"cache_ttl": float("nan")},
        ),
        (
            lambda **kw: IntrospectionAuth(
                endpoint="https://idp.example/introspect", client_id="c", client_secret="s", **kw
            ),
            {"timeout": 0},
        ),
        (lambda **kw: DPoPVerifier(**kw), {"max_age": float("nan")}),
        (lambda **kw: DPoPVerifier(**kw), {"leeway": -1}),
        (lambda **kw: DPoPVerifier(**kw), {"nonce_lifetime": 0}),  # divides the clock
    ],
)
def test_durations_that_would_switch_a_check_off_are_refused(
    make: Any, kwargs: dict[str, Any]
) -> None:
    (name,) = kwargs
    with pytest.raises(ValueError, match=name):
        make(**kwargs)

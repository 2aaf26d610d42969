"""RFC 9728 Protected Resource Metadata served by the middleware (ASGI and WSGI)."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from asgi_auth import (
    AuthMiddleware,
    IntrospectionAuth,
    JWTAuth,
    ProtectedResource,
    Rule,
)
from asgi_auth.dpop import DPoPVerifier

ISSUER = "https://login.example.test"


def _authenticators(dpop: Any = "allowed") -> list[Any]:
    secret = b"k" * 32
    return [
        JWTAuth(
            "svc",
            "api",
            algorithms=["HS256"],
            keys=secret,
            dpop=dpop,
            dpop_verifier=DPoPVerifier(algorithms=["ES256", "EdDSA"]) if dpop != "off" else None,
        ),
        JWTAuth(ISSUER, "api", algorithms=["RS256"], jwks_uri=ISSUER + "/jwks", dpop="off"),
        # Never reached in these tests; a loopback endpoint keeps them off the network.
        IntrospectionAuth(
            issuer=ISSUER,
            endpoint="http://127.0.0.1:9/introspect",
            client_id="rs",
            client_secret="x",
            dpop="off",
        ),
    ]


def _app(**kw: Any) -> TestClient:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("hi")

    app = Starlette(routes=[Route("/items", home)])
    return TestClient(AuthMiddleware(app, authenticators=_authenticators(), **kw))


def test_document_from_configuration() -> None:
    resource = ProtectedResource("https://api.example.test/v1", resource_name="Items API")
    with _app(
        resource=resource, rules=[Rule("/items", scopes=["items:read"])], required_scopes=["api"]
    ) as c:
        r = c.get("/.well-known/oauth-protected-resource/v1")
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {
        "resource": "https://api.example.test/v1",
        "authorization_servers": ["svc", ISSUER],
        "scopes_supported": ["api", "items:read"],
        "bearer_methods_supported": ["header"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA"],
        "resource_name": "Items API",
    }


def test_every_401_challenge_names_the_metadata() -> None:
    resource = ProtectedResource("https://api.example.test")
    with _app(resource=resource) as c:
        r = c.get("/items")
        forged = jwt.encode({"iss": "svc", "aud": "api", "exp": 2**31}, "w" * 32, algorithm="HS256")
        bad = c.get("/items", headers={"Authorization": f"Bearer {forged}"})
    url = 'resource_metadata="https://api.example.test/.well-known/oauth-protected-resource"'
    for response in (r, bad):
        assert response.status_code == 401
        challenges = response.headers["www-authenticate"]
        assert challenges.count(url) == 2  # on the Bearer and on the DPoP challenge
    with _app(resource=resource) as c:
        assert c.get("/.well-known/oauth-protected-resource").status_code == 200


def test_explicit_fields_win_and_dpop_required_is_said() -> None:
    resource = ProtectedResource(
        "https://api.example.test",
        authorization_servers=["https://as"],
        scopes_supported=["x"],
        extra={"tls_client_certificate_bound_access_tokens": False},
    )
    app = Starlette(routes=[])
    mw = AuthMiddleware(app, authenticators=_authenticators("required")[:1], resource=resource)
    with TestClient(mw) as c:
        doc = c.get("/.well-known/oauth-protected-resource").json()
    assert doc["authorization_servers"] == ["https://as"]
    assert doc["scopes_supported"] == ["x"]
    assert doc["dpop_bound_access_tokens_required"] is True
    assert doc["tls_client_certificate_bound_access_tokens"] is False


def test_wsgi_serves_it_too() -> None:
    from flask import Flask

    from wsgi_auth import AuthMiddleware as WSGIAuth

    flask_app = Flask(__name__)
    resource = ProtectedResource("https://api.example.test")
    flask_app.wsgi_app = WSGIAuth(  # type: ignore[method-assign]
        flask_app.wsgi_app, authenticators=_authenticators(), resource=resource
    )
    c = flask_app.test_client()
    assert c.get("/.well-known/oauth-protected-resource").json["resource"] == resource.resource
    assert "resource_metadata=" in c.get("/x").headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "bad", ["api.example", "https://api.example/?q=1", "ftp://x/y", "https://"]
)
def test_resource_must_be_a_plain_url(bad: str) -> None:
    with pytest.raises(ValueError):
        ProtectedResource(bad)

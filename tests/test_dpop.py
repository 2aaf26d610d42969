"""DPoP (RFC 9449) through the middleware, ASGI and WSGI, for JWT and introspected tokens."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from asgi_auth import AuthMiddleware, IntrospectionAuth, JWTAuth
from asgi_auth.dpop import DPoPError, DPoPVerifier, UseDPoPNonce, normalize_htu, thumbprint
from tests.dpop_client import DPoPKey, rsa_key_with_exponent
from tests.helpers_core import Clock
from tests.idp import IdP, running_idp

URL = "http://testserver/me"


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as server:
        server.add_key("ES256")
        yield server


def _app() -> Starlette:
    async def me(request: Request) -> JSONResponse:
        i = request.auth
        return JSONResponse({"sub": i.subject, "jkt": i.dpop_jkt, "method": i.method})

    return Starlette(routes=[Route("/me", me, methods=["GET", "POST"])])


def client(idp: IdP, **kw: Any) -> TestClient:
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, **kw)
    return TestClient(AuthMiddleware(_app(), authenticators=[auth]))


def test_bound_token_with_a_fresh_proof(idp: IdP) -> None:
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    with client(idp) as c:
        for _ in range(3):  # a cached token still needs a new proof each time
            r = c.get(
                "/me",
                headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", URL, token)},
            )
            assert r.status_code == 200, r.text
            assert r.json() == {"sub": "user-1", "jkt": key.jkt, "method": "jwt"}


def _expect(r: Any, error: str) -> None:
    """401 with the error on the challenge of its scheme: invalid_token on Bearer (a bound
    token used as a bearer token) or DPoP, invalid_dpop_proof on DPoP."""
    assert r.status_code == 401, r.text
    bearer, _, dpop = r.headers["www-authenticate"].partition(", DPoP ")
    if error == "invalid_dpop_proof":
        assert f'error="{error}"' in dpop
        assert "error=" not in bearer
    else:
        assert f'error="{error}"' in bearer + dpop
    assert r.json()["error"] == error


def test_refusals(idp: IdP) -> None:
    key, other = DPoPKey(), DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    with client(idp) as c:

        def get(headers: dict[str, str], method: str = "GET") -> Any:
            return c.request(method, "/me", headers=headers)

        auth = {"Authorization": f"DPoP {token}"}
        # as Bearer, without proof: §7.1
        r = get({"Authorization": f"Bearer {token}"})
        _expect(r, "invalid_token")
        assert r.headers["www-authenticate"].startswith('Bearer realm="api", error="invalid_token"')
        r = get({"Authorization": f"Bearer {token}", "DPoP": key.proof("GET", URL, token)})
        _expect(r, "invalid_token")
        # DPoP scheme without a proof
        _expect(get(auth), "invalid_dpop_proof")
        # replayed proof
        proof = key.proof("GET", URL, token)
        assert get({**auth, "DPoP": proof}).status_code == 200
        _expect(get({**auth, "DPoP": proof}), "invalid_dpop_proof")
        # wrong htm, htu, ath, key, typ, iat, two proofs
        _expect(get({**auth, "DPoP": key.proof("POST", URL, token)}), "invalid_dpop_proof")
        _expect(
            get({**auth, "DPoP": key.proof("GET", "http://testserver/other", token)}),
            "invalid_dpop_proof",
        )
        _expect(get({**auth, "DPoP": key.proof("GET", URL, "another-token")}), "invalid_dpop_proof")
        _expect(get({**auth, "DPoP": key.proof("GET", URL, None)}), "invalid_dpop_proof")
        _expect(get({**auth, "DPoP": other.proof("GET", URL, token)}), "invalid_dpop_proof")
        _expect(
            get({**auth, "DPoP": key.proof("GET", URL, token, iat=int(time.time()) - 3600)}),
            "invalid_dpop_proof",
        )
        two = f"{key.proof('GET', URL, token)}, {key.proof('GET', URL, token)}"
        _expect(get({**auth, "DPoP": two}), "invalid_dpop_proof")
        _expect(get({**auth, "DPoP": "not-a-jwt"}), "invalid_dpop_proof")
        # an unbound token under the DPoP scheme
        plain = idp.token(jti="plain")
        r = get({"Authorization": f"DPoP {plain}", "DPoP": key.proof("GET", URL, plain)})
        _expect(r, "invalid_token")
        # the challenge advertises algorithms
        assert 'DPoP realm="api", algs="' in get({}).headers["www-authenticate"]


def test_query_and_fragment_do_not_count_in_htu(idp: IdP) -> None:
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    with client(idp) as c:
        r = c.get(
            "/me?x=1",
            headers={
                "Authorization": f"DPoP {token}",
                "DPoP": key.proof("GET", "HTTP://TestServer:80/me", token),
            },
        )
    assert r.status_code == 200


def test_dpop_required_refuses_bearer_and_off_offers_no_dpop(idp: IdP) -> None:
    key = DPoPKey()
    plain = idp.token(jti="p")
    with client(idp, dpop="required") as c:
        r = c.get("/me", headers={"Authorization": f"Bearer {plain}"})
        assert r.status_code == 401
        assert r.headers["www-authenticate"].startswith("DPoP ")
    bound = idp.token(cnf={"jkt": key.jkt})
    with client(idp, dpop="off") as c:
        # A bound token is no bearer token, DPoP support or not (RFC 9449 §7.1-7.2).
        assert c.get("/me", headers={"Authorization": f"Bearer {bound}"}).status_code == 401
        assert c.get("/me", headers={"Authorization": f"Bearer {plain}"}).status_code == 200
        r = c.get(
            "/me", headers={"Authorization": f"DPoP {bound}", "DPoP": key.proof("GET", URL, bound)}
        )
        assert r.status_code == 401  # the DPoP scheme is not offered at all


def test_server_nonce(idp: IdP) -> None:
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    verifier = DPoPVerifier(require_nonce=True)
    with client(idp, dpop_verifier=verifier) as c:
        auth = {"Authorization": f"DPoP {token}"}
        r = c.get("/me", headers={**auth, "DPoP": key.proof("GET", URL, token)})
        assert r.status_code == 401
        assert 'error="use_dpop_nonce"' in r.headers["www-authenticate"]
        nonce = r.headers["dpop-nonce"]
        r = c.get("/me", headers={**auth, "DPoP": key.proof("GET", URL, token, nonce=nonce)})
        assert r.status_code == 200


def test_a_proof_key_with_a_huge_rsa_exponent_is_refused(idp: IdP) -> None:
    # Each check with a 3071-bit exponent cost ~5-9 ms: a cheap way to burn the server's
    # CPU. Refused even when the token is bound to that very key and the proof is valid.
    key = DPoPKey(*rsa_key_with_exponent(2048, 2047), alg="RS256")
    token = idp.token(cnf={"jkt": key.jkt})
    with client(idp) as c:
        r = c.get(
            "/me", headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", URL, token)}
        )
    _expect(r, "invalid_dpop_proof")
    assert r.json()["error_description"] == "DPoP proof jwk is unusable"
    usual = DPoPKey(*rsa_key_with_exponent(2048, 17), alg="RS256")  # e = 65537
    token = idp.token(cnf={"jkt": usual.jkt})
    with client(idp) as c:
        r = c.get(
            "/me",
            headers={"Authorization": f"DPoP {token}", "DPoP": usual.proof("GET", URL, token)},
        )
    assert r.status_code == 200, r.text


def test_the_binding_is_compared_before_the_signature_is_checked() -> None:
    # A proof made with another key than the token's is refused without the costly step.
    key, other = DPoPKey(), DPoPKey()
    h, p, _ = other.proof("GET", URL, "tok").split(".")
    foreign = other.proof("GET", URL, "tok").split(".")[2]  # a signature of another proof
    with pytest.raises(DPoPError) as info:
        DPoPVerifier().verify(
            f"{h}.{p}.{foreign}", method="GET", url=URL, access_token="tok", jkt=key.jkt
        )
    assert info.value.reason == "dpop_jkt"  # before: dpop_signature, checked first
    with pytest.raises(DPoPError) as info:  # the signature still counts for its own key
        DPoPVerifier().verify(
            f"{h}.{p}.{foreign}", method="GET", url=URL, access_token="tok", jkt=other.jkt
        )
    assert info.value.reason == "dpop_signature"


# -- server nonces (RFC 9449 §9) ---------------------------------------------------------

LIFETIME = 300.0
PERIOD_START = LIFETIME * 5_666_667  # a period begins here (in November 2023)


def nonce_accepted(verifier: DPoPVerifier, clock: Clock, nonce: str) -> bool:
    """Whether a proof carrying `nonce`, otherwise valid, passes now."""
    key = DPoPKey()
    proof = key.proof("GET", URL, "tok", nonce=nonce, iat=int(clock.now))
    refusal = None
    try:
        verifier.verify(proof, method="GET", url=URL, access_token="tok", jkt=key.jkt)
    except UseDPoPNonce as err:
        refusal = err
    if refusal is not None:
        assert refusal.nonce == verifier.current_nonce()  # the retry gets the current one
    return refusal is None


def test_a_nonce_is_good_for_its_period_and_the_next_only() -> None:
    clock = Clock(PERIOD_START)
    verifier = DPoPVerifier(require_nonce=True, nonce_lifetime=LIFETIME, clock=clock)
    nonce = verifier.current_nonce()  # handed out at the very start of its period
    assert nonce_accepted(verifier, clock, nonce)
    clock.advance(2 * LIFETIME - 1)  # the last second of the next period
    assert nonce_accepted(verifier, clock, nonce)
    assert verifier.current_nonce() != nonce
    clock.advance(1)
    assert not nonce_accepted(verifier, clock, nonce)
    for other in ("", "é", "x" * 43, verifier.current_nonce() + "x"):
        assert not nonce_accepted(verifier, clock, other)


@pytest.mark.parametrize("age", [2 * LIFETIME, 3 * LIFETIME + 17, 30 * 86400])
def test_an_old_nonce_is_refused_on_a_quiet_server(age: float) -> None:
    # Before: the last nonce handed out stayed "previous" until the next request, however
    # long ago it was issued; a 30-day-old one passed.
    clock = Clock(PERIOD_START + LIFETIME - 1)  # handed out in the last second of its period
    verifier = DPoPVerifier(require_nonce=True, nonce_lifetime=LIFETIME, clock=clock)
    nonce = verifier.current_nonce()
    clock.advance(age - LIFETIME + 1)  # not one request in between
    assert not nonce_accepted(verifier, clock, nonce)
    assert nonce_accepted(verifier, clock, verifier.current_nonce())


def test_verifiers_sharing_a_nonce_secret_accept_each_others_nonces() -> None:
    clock = Clock(PERIOD_START + 100)
    secret, other_secret = b"n" * 32, b"m" * 32

    def verifier(nonce_secret: bytes | None) -> DPoPVerifier:
        return DPoPVerifier(require_nonce=True, nonce_secret=nonce_secret, clock=clock)

    one, two, stranger, default = (
        verifier(secret),
        verifier(secret),
        verifier(other_secret),
        verifier(None),
    )
    nonce = one.current_nonce()
    assert two.current_nonce() == nonce
    assert nonce_accepted(two, clock, nonce)
    assert not nonce_accepted(stranger, clock, nonce)
    assert not nonce_accepted(default, clock, nonce)  # random per verifier by default
    clock.advance(LIFETIME)
    assert nonce_accepted(two, clock, nonce)  # the previous period's, in any process
    assert not nonce_accepted(stranger, clock, nonce)


def test_a_nonce_secret_must_be_bytes_of_32_or_more() -> None:
    with pytest.raises(ValueError, match="nonce_secret must be at least 32 bytes"):
        DPoPVerifier(nonce_secret=b"s" * 31)
    with pytest.raises(TypeError, match="nonce_secret must be bytes"):
        DPoPVerifier(nonce_secret="s" * 32)  # type: ignore[arg-type]
    assert "s" * 32 not in repr(DPoPVerifier(nonce_secret=b"s" * 32))


def test_introspected_dpop_token(idp: IdP) -> None:
    key = DPoPKey()
    idp.introspection["opaque"] = {
        "active": True,
        "sub": "s",
        "exp": int(time.time()) + 60,
        "cnf": {"jkt": key.jkt},
        "token_type": "DPoP",
    }
    auth = IntrospectionAuth(
        endpoint=idp.issuer + "/introspect", client_id="rs", client_secret="rs-secret"
    )
    with TestClient(AuthMiddleware(_app(), authenticators=[auth])) as c:
        r = c.get(
            "/me", headers={"Authorization": "DPoP opaque", "DPoP": key.proof("GET", URL, "opaque")}
        )
        assert r.json() == {"sub": "s", "jkt": key.jkt, "method": "introspection"}
        assert c.get("/me", headers={"Authorization": "Bearer opaque"}).status_code == 401


def test_wsgi(idp: IdP) -> None:
    from flask import Flask
    from flask import request as flask_request

    from wsgi_auth import AuthMiddleware as WSGIAuth

    app = Flask(__name__)

    @app.post("/me")
    def me() -> dict[str, Any]:
        i = flask_request.environ["wsgi_auth.identity"]
        return {"sub": i.subject, "jkt": i.dpop_jkt}

    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    app.wsgi_app = WSGIAuth(app.wsgi_app, authenticators=[auth])  # type: ignore[method-assign]
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    c = app.test_client()
    url = "http://localhost/me"
    r = c.post(
        "/me", headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("POST", url, token)}
    )
    assert r.status_code == 200, r.text
    assert r.json == {"sub": "user-1", "jkt": key.jkt}
    r = c.post(
        "/me", headers={"Authorization": f"DPoP {token}", "DPoP": key.proof("GET", url, token)}
    )
    assert r.status_code == 401


def test_thumbprint_matches_rfc7638_example() -> None:
    # RFC 7638 §3.1's example key and thumbprint.
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSo"
        "c_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YG"
        "jQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt"
        "-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDK"
        "gw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("HTTPS://Example.COM:443/a/b?x=1#f", "https://example.com/a/b"),
        ("http://example.com:8080/a", "http://example.com:8080/a"),
        ("http://example.com", "http://example.com/"),
        ("http://[::1]:80/x", "http://[::1]/x"),
    ],
)
def test_htu_normalisation(url: str, normal: str) -> None:
    assert normalize_htu(url) == normal

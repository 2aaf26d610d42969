"""NaN and infinities in JSON from outside (issue 13, item 7). Python's `json` reads `NaN`,
`Infinity`, `-Infinity`, and `1e400` as an infinite float; a NaN compares false with
everything, so `nbf > now` let an introspected token through. Every source refuses them:
tokens and DPoP proofs are 401, the servers' documents are garbage (503, stale keys kept).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from asgi_auth import IntrospectionAuth, JWTAuth, strict_json
from asgi_auth.authenticator import RequestInfo
from asgi_auth.client import ClientCredentials, TokenError
from asgi_auth.errors import AuthError
from asgi_auth.flow import SyncDriver
from tests.dpop_client import DPoPKey
from tests.helpers_core import Clock, make_client
from tests.idp import IdP, running_idp

SECRET = b"s" * 32
REQ = RequestInfo("GET", "/", "http", "127.0.0.1")
NAN = float("nan")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header: str, payload: str, sign: Any) -> str:
    """A compact JWS over the exact JSON texts given: json.dumps cannot write 1e400."""
    message = f"{b64(header.encode())}.{b64(payload.encode())}"
    return f"{message}.{b64(sign(message.encode()))}"


def hs256(message: bytes) -> bytes:
    return hmac.digest(SECRET, message, "sha256")


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as server:
        yield server


@pytest.mark.parametrize(
    "text", ["NaN", "-Infinity", '{"a": Infinity}', '[1, {"nbf": NaN}]', "1e400", '{"x": -1E+400}']
)
def test_the_loader_refuses_nan_and_infinities(text: str) -> None:
    with pytest.raises(ValueError):
        strict_json.loads(text)
    with pytest.raises(ValueError):
        strict_json.loads(text.encode())


def test_the_loader_reads_what_json_reads() -> None:
    text = '{"n": 1.5e3, "big": 100000000000000000000000, "s": "\\u00e9", "l": [true, null]}'
    want = {"n": 1500.0, "big": 10**23, "s": "é", "l": [True, None]}
    for data in (text, text.encode(), b"\xef\xbb\xbf" + text.encode(), text.encode("utf-16")):
        assert json.loads(data) == want  # a BOM and UTF-16 too, as json.loads reads them
        assert strict_json.loads(data) == want
    with pytest.raises(ValueError):
        strict_json.loads(b"[" * 100_000 + b"]" * 100_000)  # too deep: ValueError too


def with_members(doc: dict[str, Any], members: str) -> str:
    """`doc` as JSON text with `members` (raw JSON text) added; a repeated name counts
    as its last occurrence, as json.loads reads it."""
    text = json.dumps(doc)
    return text[:-1] + ", " + members + "}" if members else text


@pytest.mark.parametrize(
    ("header", "payload"),
    [
        ("", '"nbf": NaN'),
        ("", '"exp": Infinity'),
        ("", '"nbf": -1e400'),  # before: -inf, "long ago", accepted
        ('"x": -Infinity', ""),
    ],
)
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_token_with_nan_or_infinity_is_401(kind: str, header: str, payload: str) -> None:
    claims = {"iss": "svc", "aud": "api", "sub": "s", "exp": int(time.time()) + 3600}
    client = make_client(kind, [JWTAuth("svc", "api", algorithms=["HS256"], keys=SECRET)])
    plain = jws(with_members({"alg": "HS256"}, ""), with_members(claims, ""), hs256)
    assert client("/", headers=[("Authorization", f"Bearer {plain}")]).status == 200
    token = jws(with_members({"alg": "HS256"}, header), with_members(claims, payload), hs256)
    reply = client("/", headers=[("Authorization", f"Bearer {token}")])
    assert reply.status == 401 and not reply.reached
    challenge = reply.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge


@pytest.mark.parametrize(
    "extra", ['"iat": NaN', '"iat": Infinity', '"x": -Infinity', '"x": 1e400', '"x": -1e999']
)
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_dpop_proof_with_nan_or_infinity_is_401(kind: str, extra: str) -> None:
    key = DPoPKey()
    now = int(time.time())
    token = jws(
        '{"alg":"HS256"}',
        json.dumps(
            {"iss": "svc", "aud": "api", "sub": "s", "exp": now + 3600, "cnf": {"jkt": key.jkt}}
        ),
        hs256,
    )

    def es256(message: bytes) -> bytes:
        r, s = decode_dss_signature(key.private.sign(message, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def proof(more: str) -> str:
        claims = {
            "jti": f"j{more}",
            "htm": "GET",
            "htu": "http://testserver/",
            "iat": now,
            "ath": b64(hashlib.sha256(token.encode()).digest()),
        }
        header = json.dumps({"typ": "dpop+jwt", "alg": "ES256", "jwk": key.jwk})
        return jws(header, with_members(claims, more), es256)

    client = make_client(kind, [JWTAuth("svc", "api", algorithms=["HS256"], keys=SECRET)])
    auth = ("Authorization", f"DPoP {token}")
    assert client("/", headers=[auth, ("Host", "testserver"), ("DPoP", proof(""))]).status == 200
    reply = client("/", headers=[auth, ("Host", "testserver"), ("DPoP", proof(extra))])
    assert reply.status == 401 and not reply.reached
    assert 'error="invalid_dpop_proof"' in reply.headers["www-authenticate"]


# -- the servers' documents: garbage, as an HTML page would be --------------------------


def introspect(auth: IntrospectionAuth, token: str) -> Any:
    return SyncDriver().run(auth.flow(token, REQ))


@pytest.mark.parametrize(
    "answer",
    [
        {"nbf": NAN},  # the report: `nbf > now` is false for NaN, so it passed
        {"nbf": float("-inf")},
        {"exp": float("inf")},
        {"ext": {"weight": NAN}},
    ],
)
def test_an_introspection_answer_with_nan_or_infinity_is_503(
    idp: IdP, answer: dict[str, Any]
) -> None:
    clock = Clock(time.time())
    idp.introspection["t"] = {"active": True, "sub": "s", "exp": int(clock.now) + 600, **answer}
    idp.introspection["ok"] = {"active": True, "sub": "s", "exp": int(clock.now) + 600}
    auth = IntrospectionAuth(
        endpoint=idp.issuer + "/introspect", client_id="rs", client_secret="rs-secret", clock=clock
    )
    assert introspect(auth, "ok").subject == "s"
    with pytest.raises(AuthError) as info:
        introspect(auth, "t")
    assert info.value.status == 503
    assert info.value.reason == "introspection_invalid"
    assert dict(info.value.headers([]))["Retry-After"]


def test_an_introspection_answer_with_an_overflowing_number_is_503(idp: IdP) -> None:
    idp.introspect_mode = "raw"
    idp.introspect_raw = b'{"active": true, "sub": "s", "nbf": -1e400}'
    auth = IntrospectionAuth(
        endpoint=idp.issuer + "/introspect", client_id="rs", client_secret="rs-secret"
    )
    with pytest.raises(AuthError) as info:
        introspect(auth, "t")
    assert (info.value.status, info.value.reason) == (503, "introspection_invalid")


def _jwt_auth(idp: IdP, clock: Clock, **kw: Any) -> JWTAuth:
    return JWTAuth(idp.issuer, "api", algorithms=["ES256"], clock=clock, **kw)


def _check(auth: JWTAuth, token: str) -> Any:
    return SyncDriver().run(auth.flow(token, REQ))


NAN_KEY = {"kty": "EC", "crv": "P-256", "kid": "odd", "x": NAN, "y": NAN}


def test_a_jwks_with_nan_is_garbage(idp: IdP, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(time.time())
    idp.clock = clock
    idp.add_key("ES256")
    idp.extra_jwks = [NAN_KEY]  # before: this key skipped, the others taken
    auth = _jwt_auth(idp, clock, jwks_uri=idp.jwks_uri)
    with pytest.raises(AuthError) as info:
        _check(auth, idp.token())
    assert (info.value.status, info.value.reason) == (503, "jwks_unavailable")
    # Once keys were had, such an answer leaves them in place (stale-if-error), as any
    # garbage answer does, and the failed refresh is logged.
    idp.extra_jwks = []
    clock.advance(10)  # past the retry interval after a failure
    assert _check(auth, idp.token(jti="a")).subject == "user-1"
    clock.advance(301)  # past max-age=300: a refresh is due
    idp.extra_jwks = [NAN_KEY]
    with caplog.at_level("WARNING", logger="asgi_auth"):
        assert _check(auth, idp.token(jti="b")).subject == "user-1"
    assert any("JWKS refresh failed" in r.getMessage() for r in caplog.records)


def test_a_discovery_document_with_nan_is_garbage(idp: IdP) -> None:
    clock = Clock(time.time())
    idp.clock = clock
    idp.add_key("ES256")
    idp.discovery_extra = {"claims_supported": ["sub", NAN]}
    auth = _jwt_auth(idp, clock)  # keys through discovery
    with pytest.raises(AuthError) as info:
        _check(auth, idp.token())
    assert (info.value.status, info.value.reason) == (503, "jwks_unavailable")
    idp.discovery_extra = {}
    clock.advance(10)
    assert _check(auth, idp.token(jti="a")).subject == "user-1"


def test_a_token_endpoint_answer_with_infinity_is_refused(idp: IdP) -> None:
    # `expires_in: Infinity` would keep the token for ever on the caller's side.
    idp.add_key("ES256")
    idp.token_answer_extra = {"expires_in": float("inf")}
    auth = ClientCredentials(idp.issuer + "/token", "svc", "svc-secret")
    with httpx2.Client(auth=auth, timeout=10) as c, pytest.raises(TokenError, match="usable"):
        c.get(idp.issuer + "/jwks")
    idp.token_answer_extra = {}
    with httpx2.Client(auth=auth, timeout=10) as c:
        assert c.get(idp.issuer + "/jwks").status_code == 200

"""OAuth cases: a cached introspection result, and a cached DPoP-bound JWT whose proof is
checked on every request (RFC 9449 makes proofs per request: their cost is the point)."""

from __future__ import annotations

import json
import time
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from asgi_auth import AuthMiddleware, IntrospectionAuth, JWTAuth
from asgi_auth.authenticator import RequestInfo
from asgi_auth.client import DPoPKey
from asgi_auth.dpop import DPoPVerifier
from asgi_auth.flow import SyncDriver
from asgi_auth.http import HTTP, HTTPResult
from asgi_auth.jose import b64decode
from wsgi_auth import AuthMiddleware as WSGIAuthMiddleware

from . import apps
from .cases import Fixture, group
from .harness import CRYPTO, ASGIRunner, CallRunner, Case, WSGIRunner

OPAQUE = "opaque-bench-token-6f0c2b1e9d"
URL = "http://127.0.0.1:8000/items"


class _AnswerOnce(HTTP):
    """Answers the one introspection call made to warm the cache; nothing is measured
    through it (the timed requests are all cache hits)."""

    def request(self, method: str, url: str, **kw: Any) -> HTTPResult:
        body = {
            "active": True,
            "sub": "svc",
            "client_id": "svc",
            "scope": "items:read",
            "exp": int(time.time()) + 3600,
        }
        return HTTPResult(200, {}, json.dumps(body).encode())


class _NoReplayCheck:
    """One proof reused for every timed request: replay detection (one dict insert in
    the default cache) is left out so the same proof can be measured over and over."""

    def seen(self, jti: str, expires_at: float) -> bool:
        return False


@group
def oauth_cases(fx: Fixture) -> list[Case]:
    info = RequestInfo("GET", "/items", "http", "127.0.0.1")
    intro = IntrospectionAuth(
        endpoint="https://as.bench.example/introspect",
        client_id="rs",
        client_secret="bench-secret",
        http=_AnswerOnce(),
    )
    SyncDriver().run(intro.flow(OPAQUE, info))

    signer = ec.generate_private_key(ec.SECP256R1())
    client_key = DPoPKey()
    now = int(time.time())
    claims = {
        "iss": "https://as.bench.example",
        "aud": "api",
        "sub": "svc",
        "exp": now + 3600,
        "cnf": {"jkt": client_key.thumbprint},
        "scope": "items:read",
    }
    token = pyjwt.encode(claims, signer, algorithm="ES256")
    jwt_auth = JWTAuth(
        "https://as.bench.example",
        "api",
        algorithms=["ES256"],
        keys=signer.public_key(),
        dpop_verifier=DPoPVerifier(replay_cache=_NoReplayCheck()),
    )
    proof = client_key.proof("GET", URL, access_token=token)

    head, body, sig = proof.split(".")
    proof_pub = pyjwt.PyJWK(client_key.jwk).key
    der_sig = b64decode(sig)
    half = len(der_sig) // 2
    from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

    der = encode_dss_signature(
        int.from_bytes(der_sig[:half], "big"), int.from_bytes(der_sig[half:], "big")
    )
    msg = f"{head}.{body}".encode()

    def raw_proof_verify() -> None:
        proof_pub.verify(der, msg, ec.ECDSA(hashes.SHA256()))

    bearer = [(b"authorization", f"Bearer {OPAQUE}".encode())]
    dpop = [(b"authorization", f"DPoP {token}".encode()), (b"dpop", proof.encode())]
    return [
        Case(
            "introspection, cached",
            "asgi",
            ASGIRunner(
                AuthMiddleware(apps.bare_asgi, authenticators=[intro]),
                apps.http_scope(headers=bearer),
                identity="introspection",
            ),
        ),
        Case(
            "DPoP-bound JWT, cached, proof checked",
            "asgi",
            ASGIRunner(
                AuthMiddleware(apps.bare_asgi, authenticators=[jwt_auth]),
                apps.http_scope(headers=dpop),
                identity="jwt",
            ),
            CRYPTO,
        ),
        Case(
            "introspection, cached",
            "wsgi",
            WSGIRunner(
                WSGIAuthMiddleware(apps.bare_wsgi, authenticators=[intro]),
                apps.environ(AUTHORIZATION=f"Bearer {OPAQUE}"),
                identity="introspection",
            ),
        ),
        Case(
            "DPoP-bound JWT, cached, proof checked",
            "wsgi",
            WSGIRunner(
                WSGIAuthMiddleware(apps.bare_wsgi, authenticators=[jwt_auth]),
                apps.environ(AUTHORIZATION=f"DPoP {token}", DPOP=proof),
                identity="jwt",
            ),
            CRYPTO,
        ),
        Case("raw ES256 verify of the DPoP proof", "floor", CallRunner(raw_proof_verify), CRYPTO),
    ]

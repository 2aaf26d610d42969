"""Peer cases: other auth libraries as their users write them (see `peer_apps`), each
against the bare app of its own framework, in the same interleaved run as authgate.

Kinds: "starlette" (a bare Starlette app, authgate and Starlette's
`AuthenticationMiddleware` with PyJWT, PyJWKClient or a hashed API key), "fastapi"
(`HTTPBearer` + PyJWT beside authgate's FastAPI cases), "flask" (flask-jwt-extended,
Authlib's RFC 9068 `ResourceProtector`, authgate's cached JWT), and floors. Every peer
route answers 200 only when authenticated, which the runners' `check()` asserts.
"""

from __future__ import annotations

import secrets
import uuid
import weakref
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from starlette.middleware import Middleware

from asgi_auth import AuthMiddleware
from wsgi_auth import AuthMiddleware as WSGIAuthMiddleware

from . import apps, peer_apps
from .cases import KEY_CACHED, Fixture, group
from .harness import BARE, CRYPTO, FRAMEWORK, ASGIRunner, CallRunner, Case, WSGIRunner
from .jwt_cases import AUDIENCE, CACHED_ALG, ISSUER, JWT_CACHED, Keys

STARLETTE = "starlette"

STARLETTE_PYJWT = "Starlette AuthenticationMiddleware + PyJWT {alg}"
STARLETTE_PYJWT_RS256 = STARLETTE_PYJWT.format(alg="RS256")
STARLETTE_PYJWT_ES256 = STARLETTE_PYJWT.format(alg="ES256")
STARLETTE_PYJWT_EDDSA = STARLETTE_PYJWT.format(alg="EdDSA")
STARLETTE_PYJWT_HS256 = STARLETTE_PYJWT.format(alg="HS256")
STARLETTE_PYJWKCLIENT = "Starlette AuthenticationMiddleware + PyJWKClient RS256"
STARLETTE_API_KEY = "Starlette AuthenticationMiddleware + API key (SHA-256 + dict)"
FASTAPI_BEARER_ASYNC = "FastAPI HTTPBearer + PyJWT ES256 (async dep)"
FASTAPI_BEARER_SYNC = "FastAPI HTTPBearer + PyJWT ES256 (sync dep)"
FLASK_JWT_EXTENDED_HS256 = "flask-jwt-extended HS256"
FLASK_JWT_EXTENDED_RS256 = "flask-jwt-extended RS256"
AUTHLIB_RS256 = "Authlib ResourceProtector RS256"
PYJWKCLIENT_FLOOR = "PyJWKClient.get_signing_key_from_jwt (cached)"
PYJWT_HS256_FLOOR = "PyJWT jwt.decode HS256"

STARLETTE_PYJWT_ALGS = ("RS256", "ES256", "EdDSA", "HS256")
FASTAPI_ALG = "ES256"

# Every peer case, as (kind, case).
PEER_CASES: tuple[tuple[str, str], ...] = (
    *((STARLETTE, STARLETTE_PYJWT.format(alg=a)) for a in STARLETTE_PYJWT_ALGS),
    (STARLETTE, STARLETTE_PYJWKCLIENT),
    (STARLETTE, STARLETTE_API_KEY),
    ("fastapi", FASTAPI_BEARER_ASYNC),
    ("fastapi", FASTAPI_BEARER_SYNC),
    ("flask", FLASK_JWT_EXTENDED_HS256),
    ("flask", FLASK_JWT_EXTENDED_RS256),
    ("flask", AUTHLIB_RS256),
    ("floor", PYJWKCLIENT_FLOOR),
    ("floor", PYJWT_HS256_FLOOR),
)


class PeerKeys:
    """Keys and tokens for the peers, made once per fixture: `jwt_cases.Keys` (RS256, ES256,
    EdDSA; `kid` = alg), an HS256 secret and token, the issuer's JWKS (RS256 and ES256
    public keys) served on loopback, and an RFC 9068 access token for Authlib."""

    def __init__(self) -> None:
        self.keys = Keys()
        self.hs256_secret = secrets.token_bytes(32)
        self.tokens = dict(self.keys.tokens)
        self.tokens["HS256"] = pyjwt.encode(self.keys.claims, self.hs256_secret, "HS256")
        self.public = {alg: key.public_key() for alg, key in self.keys.private.items()}
        self.public["HS256"] = self.hs256_secret
        self.jwks = {
            "keys": [
                {
                    **pyjwt.algorithms.RSAAlgorithm.to_jwk(self.public["RS256"], as_dict=True),
                    "kid": "RS256",
                    "alg": "RS256",
                    "use": "sig",
                },
                {
                    **pyjwt.algorithms.ECAlgorithm.to_jwk(self.public["ES256"], as_dict=True),
                    "kid": "ES256",
                    "alg": "ES256",
                    "use": "sig",
                },
            ]
        }
        self.access_token = pyjwt.encode(  # RFC 9068: typ, client_id, jti (iat, sub, aud: set)
            {**self.keys.claims, "client_id": "bench-client", "jti": uuid.uuid4().hex},
            self.keys.private["RS256"],
            "RS256",
            headers={"kid": "RS256", "typ": "at+jwt"},
        )
        self._server: peer_apps.JWKSServer | None = None

    @property
    def server(self) -> peer_apps.JWKSServer:
        """The JWKS endpoint, started on first use."""
        if self._server is None:
            self._server = peer_apps.JWKSServer(self.jwks)
        return self._server

    def rsa_pem(self) -> tuple[bytes, bytes]:
        private = self.keys.private["RS256"]
        return (
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
            self.public["RS256"].public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )

    def bearer(self, alg: str) -> apps.Headers:
        return [(b"authorization", f"Bearer {self.tokens[alg]}".encode())]

    def close(self) -> None:
        if self._server is not None:
            self._server.close()


_PEERS: weakref.WeakKeyDictionary[Fixture, PeerKeys] = weakref.WeakKeyDictionary()


def peer_keys(fx: Fixture) -> PeerKeys:
    """The fixture's `PeerKeys`; their JWKS server stops when the fixture closes."""
    peers = _PEERS.get(fx)
    if peers is None:
        peers = _PEERS[fx] = PeerKeys()
        fx.on_close(peers.close)
    return peers


def starlette_cases_for(fx: Fixture, peers: PeerKeys) -> list[Case]:
    cached = peers.keys.auth(CACHED_ALG)
    cases = [
        Case(BARE, STARLETTE, ASGIRunner(peer_apps.starlette_app(), apps.http_scope()), FRAMEWORK),
        Case(
            JWT_CACHED,
            STARLETTE,
            ASGIRunner(
                peer_apps.starlette_app([Middleware(AuthMiddleware, authenticators=[cached])]),
                apps.http_scope(headers=peers.bearer(CACHED_ALG)),
                identity="jwt",  # check() verifies it once: later requests are cache hits
            ),
            FRAMEWORK,
        ),
        Case(
            KEY_CACHED,
            STARLETTE,
            ASGIRunner(
                peer_apps.starlette_app([Middleware(AuthMiddleware, authenticators=[fx.key_auth])]),
                fx.key_scope(),
                identity="api_key",
            ),
            FRAMEWORK,
        ),
    ]
    for alg in STARLETTE_PYJWT_ALGS:
        backend = peer_apps.PyJWTBackend(peers.public[alg], alg, AUDIENCE, ISSUER)
        runner = ASGIRunner(
            peer_apps.starlette_backend_app(backend), apps.http_scope(headers=peers.bearer(alg))
        )
        cases.append(Case(STARLETTE_PYJWT.format(alg=alg), STARLETTE, runner, CRYPTO))
    jwks_backend = peer_apps.PyJWKClientBackend(peers.server.url, "RS256", AUDIENCE, ISSUER)
    jwks_runner = ASGIRunner(
        peer_apps.starlette_backend_app(jwks_backend),
        apps.http_scope(headers=peers.bearer("RS256")),
    )
    api_key = "sk_" + secrets.token_urlsafe(32)
    key_backend = peer_apps.APIKeyBackend({api_key: "bench"})
    key_runner = ASGIRunner(
        peer_apps.starlette_backend_app(key_backend),
        apps.http_scope(headers=[(b"x-api-key", api_key.encode())]),
    )
    cases += [
        Case(STARLETTE_PYJWKCLIENT, STARLETTE, jwks_runner, CRYPTO),
        Case(STARLETTE_API_KEY, STARLETTE, key_runner, FRAMEWORK),
    ]
    return cases


@group
def starlette_peer_cases(fx: Fixture) -> list[Case]:
    return starlette_cases_for(fx, peer_keys(fx))


@group
def fastapi_peer_cases(fx: Fixture) -> list[Case]:
    # The sync dependency runs in FastAPI's threadpool, so its check() puts it on an event
    # loop, and `align_modes` then puts every "fastapi" case (the bare one too) there.
    peers = peer_keys(fx)
    scope = apps.http_scope(headers=peers.bearer(FASTAPI_ALG))
    key = peers.public[FASTAPI_ALG]
    return [
        Case(
            name,
            "fastapi",
            ASGIRunner(
                peer_apps.fastapi_pyjwt_app(key, FASTAPI_ALG, AUDIENCE, ISSUER, sync=sync), scope
            ),
            CRYPTO,
        )
        for name, sync in ((FASTAPI_BEARER_ASYNC, False), (FASTAPI_BEARER_SYNC, True))
    ]


def flask_jwt_extended_apps(peers: PeerKeys) -> dict[str, Any]:
    """flask-jwt-extended apps by case name: HS256 (its default) and RS256."""
    private_pem, public_pem = peers.rsa_pem()
    return {
        FLASK_JWT_EXTENDED_HS256: peer_apps.flask_jwt_extended_app(
            {"JWT_SECRET_KEY": secrets.token_hex(32)}
        ),
        FLASK_JWT_EXTENDED_RS256: peer_apps.flask_jwt_extended_app(
            {
                "JWT_ALGORITHM": "RS256",
                "JWT_PRIVATE_KEY": private_pem,
                "JWT_PUBLIC_KEY": public_pem,
            }
        ),
    }


@group
def flask_peer_cases(fx: Fixture) -> list[Case]:
    peers = peer_keys(fx)
    with_jwt = apps.flask_app()
    with_jwt.wsgi_app = WSGIAuthMiddleware(  # type: ignore[method-assign]
        with_jwt.wsgi_app, authenticators=[peers.keys.auth(CACHED_ALG)]
    )
    token = peers.tokens[CACHED_ALG]
    cases = [
        Case(
            JWT_CACHED,
            "flask",
            WSGIRunner(with_jwt, apps.environ(AUTHORIZATION=f"Bearer {token}"), identity="jwt"),
            FRAMEWORK,
        )
    ]
    for name, app in flask_jwt_extended_apps(peers).items():
        bearer = f"Bearer {peer_apps.flask_jwt_extended_token(app)}"
        cases.append(
            Case(name, "flask", WSGIRunner(app, apps.environ(AUTHORIZATION=bearer)), CRYPTO)
        )
    authlib = peer_apps.authlib_app(peers.jwks, ISSUER, AUDIENCE)
    bearer = f"Bearer {peers.access_token}"
    cases.append(
        Case(
            AUTHLIB_RS256, "flask", WSGIRunner(authlib, apps.environ(AUTHORIZATION=bearer)), CRYPTO
        )
    )
    return cases


@group
def peer_floor_cases(fx: Fixture) -> list[Case]:
    peers = peer_keys(fx)
    client = pyjwt.PyJWKClient(peers.server.url)
    rs_token = peers.tokens["RS256"]
    hs_token, secret = peers.tokens["HS256"], peers.hs256_secret

    def hs256_decode() -> object:
        return pyjwt.decode(
            hs_token, secret, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER
        )

    return [
        # check() fetches the JWKS once; the timed calls are cache hits.
        Case(
            PYJWKCLIENT_FLOOR,
            "floor",
            CallRunner(lambda: client.get_signing_key_from_jwt(rs_token)),
            CRYPTO,
        ),
        Case(PYJWT_HS256_FLOOR, "floor", CallRunner(hs256_decode), CRYPTO),
    ]

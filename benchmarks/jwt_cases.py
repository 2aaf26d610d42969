"""JWT cases: cached tokens beside the API-key cases, first-seen tokens per algorithm, and
floors (the raw signature check in `cryptography`, and PyJWT's `jwt.decode`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from asgi_auth import AuthMiddleware, JWTAuth
from asgi_auth.jose import b64decode
from wsgi_auth import AuthMiddleware as WSGIAuthMiddleware

from . import apps
from .cases import Fixture, Target, group, target
from .harness import CRYPTO, FRAMEWORK, ASGIRunner, CallRunner, Case, WSGIRunner

ISSUER = "https://idp.bench.example"
AUDIENCE = "api"
ALGORITHMS = ("RS256", "ES256", "EdDSA")
CACHED_ALG = "ES256"
JWT_CACHED = f"JWT {CACHED_ALG}, cached"


class Keys:
    """One signing key and one token per algorithm, made once per run."""

    def __init__(self) -> None:
        now = int(time.time())
        self.claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 3600,
            "scope": "items:read items:write",
        }
        self.private: dict[str, Any] = {
            "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ES256": ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate(),
        }
        self.tokens = {
            alg: pyjwt.encode(self.claims, key, algorithm=alg, headers={"kid": alg})
            for alg, key in self.private.items()
        }

    def auth(self, alg: str) -> JWTAuth:
        return JWTAuth(ISSUER, AUDIENCE, algorithms=[alg], keys=self.private[alg].public_key())

    def bearer(self, alg: str) -> apps.Headers:
        return [(b"authorization", f"Bearer {self.tokens[alg]}".encode())]


def raw_verify(keys: Keys, alg: str) -> Callable[[], None]:
    """The floor: the signature check alone, as `cryptography` does it."""
    head, body, sig_b64 = keys.tokens[alg].split(".")
    msg = f"{head}.{body}".encode()
    sig = b64decode(sig_b64)
    pub = keys.private[alg].public_key()
    if alg == "RS256":
        return lambda: pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())
    if alg == "ES256":
        half = len(sig) // 2
        der = encode_dss_signature(
            int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big")
        )
        return lambda: pub.verify(der, msg, ec.ECDSA(hashes.SHA256()))
    return lambda: pub.verify(sig, msg)


def first_seen(app: Any, auth: JWTAuth) -> Any:
    """The app, with the token cache emptied before every request: each one is a miss.
    The cache's dict is cleared directly (no lock, no call): harness cost is not auth cost."""
    clear = auth._hits._hits.clear

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        clear()
        await app(scope, receive, send)

    return wrapped


def first_seen_wsgi(app: Any, auth: JWTAuth) -> Any:
    """As `first_seen`, for WSGI."""
    clear = auth._hits._hits.clear

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        clear()
        return app(environ, start_response)

    return wrapped


#: Floors that run as apps of a kind (so they have an overhead), not as a bare call.
IN_APP_FLOORS = frozenset(("asgi", f"raw {alg} verify, in the app") for alg in ALGORITHMS)


def raw_in_app(keys: Keys, alg: str) -> Any:
    """The bare ASGI app that runs the raw signature check itself on every request: the
    floor measured where a middleware's check runs, between the server's and the app's
    code, rather than in a tight loop where the CPU's caches hold nothing else."""
    check = raw_verify(keys, alg)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        check()
        await apps.bare_asgi(scope, receive, send)

    return app


@group
def jwt_cases(fx: Fixture) -> list[Case]:
    keys = Keys()
    cached = keys.auth(CACHED_ALG)
    bearer = keys.bearer(CACHED_ALG)
    token = keys.tokens[CACHED_ALG]
    fast = apps.fastapi_app()
    fast.add_middleware(AuthMiddleware, authenticators=[cached])
    cases = [
        Case(
            JWT_CACHED,
            "asgi",
            ASGIRunner(
                AuthMiddleware(apps.bare_asgi, authenticators=[cached]),
                apps.http_scope(headers=bearer),
                identity="jwt",
            ),
        ),
        Case(
            JWT_CACHED,
            "wsgi",
            WSGIRunner(
                WSGIAuthMiddleware(apps.bare_wsgi, authenticators=[cached]),
                apps.environ(AUTHORIZATION=f"Bearer {token}"),
                identity="jwt",
            ),
        ),
        Case(
            JWT_CACHED,
            "fastapi",
            ASGIRunner(fast, apps.http_scope(headers=bearer), identity="jwt"),
            FRAMEWORK,
        ),
    ]
    for alg in ALGORITHMS:
        auth = keys.auth(alg)
        app = first_seen(AuthMiddleware(apps.bare_asgi, authenticators=[auth]), auth)
        runner = ASGIRunner(app, apps.http_scope(headers=keys.bearer(alg)), identity="jwt")
        cases.append(Case(f"JWT {alg}, first-seen", "asgi", runner, CRYPTO))
        auth = keys.auth(alg)
        wsgi = first_seen_wsgi(WSGIAuthMiddleware(apps.bare_wsgi, authenticators=[auth]), auth)
        env = apps.environ(AUTHORIZATION=f"Bearer {keys.tokens[alg]}")
        cases.append(
            Case(f"JWT {alg}, first-seen", "wsgi", WSGIRunner(wsgi, env, identity="jwt"), CRYPTO)
        )
        raw_app = ASGIRunner(raw_in_app(keys, alg), apps.http_scope(headers=keys.bearer(alg)))
        cases.append(Case(f"raw {alg} verify, in the app", "asgi", raw_app, CRYPTO))
    for alg in ALGORITHMS:
        pub = keys.private[alg].public_key()

        def decode(t: str = keys.tokens[alg], k: Any = pub, a: str = alg) -> object:
            return pyjwt.decode(t, k, algorithms=[a], audience=AUDIENCE, issuer=ISSUER)

        cases.append(Case(f"raw {alg} verify", "floor", CallRunner(raw_verify(keys, alg)), CRYPTO))
        cases.append(Case(f"PyJWT jwt.decode {alg}", "floor", CallRunner(decode), CRYPTO))
    return cases


target(
    Target(
        "cached JWT overhead under ASGI and WSGI",
        3.0,
        (("asgi", JWT_CACHED), ("wsgi", JWT_CACHED)),
    )
)
for _alg in ALGORITHMS:
    target(
        Target(
            f"first-seen {_alg} overhead beyond the raw signature check",
            20.0,
            (("asgi", f"JWT {_alg}, first-seen"), ("wsgi", f"JWT {_alg}, first-seen")),
            minus=("floor", f"raw {_alg} verify"),
        )
    )

"""The cases: bare apps, the same apps behind authgate, and floors (raw crypto, PyJWT)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from asgi_auth import APIKeyAuth, AuthMiddleware, JWTAuth
from asgi_auth.jose import b64decode
from asgi_auth.keys import SQLiteKeyStore
from wsgi_auth import AuthMiddleware as WSGIAuthMiddleware

from .harness import Case, asgi_runner, call_runner, wsgi_runner

ISSUER = "https://idp.bench.example"
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]


async def bare_asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def http_scope(
    path: str = "/items", headers: list[tuple[bytes, bytes]] | None = None
) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*HEADERS, *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def environ(path: str = "/items", **headers: str) -> dict[str, Any]:
    env = {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
    }
    env.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return env


class Keys:
    """Signing keys and one token per algorithm, made once per run."""

    def __init__(self) -> None:
        now = int(time.time())
        self.claims = {
            "iss": ISSUER,
            "aud": "api",
            "sub": "user-1",
            "iat": now,
            "exp": now + 3600,
            "scope": "items:read items:write",
        }
        self.private = {
            "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
            "ES256": ec.generate_private_key(ec.SECP256R1()),
            "EdDSA": ed25519.Ed25519PrivateKey.generate(),
        }
        self.tokens = {
            alg: pyjwt.encode(self.claims, key, algorithm=alg, headers={"kid": alg})
            for alg, key in self.private.items()
        }

    def auth(self, alg: str) -> JWTAuth:
        return JWTAuth(ISSUER, "api", algorithms=[alg], keys=self.private[alg].public_key())


def raw_verify(keys: Keys, alg: str) -> Any:
    """The floor: the signature check alone, as `cryptography` does it."""
    token = keys.tokens[alg]
    head, body, sig_b64 = token.split(".")
    msg = f"{head}.{body}".encode()
    sig = b64decode(sig_b64)
    pub = keys.private[alg].public_key()
    if alg == "RS256":
        return lambda: pub.verify(sig, msg, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[union-attr,call-arg]
    if alg == "ES256":
        der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
        return lambda: pub.verify(der, msg, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg,arg-type]
    return lambda: pub.verify(sig, msg)  # type: ignore[call-arg]


def first_seen(app: Any, auth: JWTAuth, scope: dict[str, Any]) -> Any:
    """Every request presents a token the cache has not seen: the cache is emptied first."""
    hits = auth._hits

    async def wrapped(s: dict[str, Any], receive: Any, send: Any) -> None:
        hits.discard()
        await app(s, receive, send)

    return asgi_runner(wrapped, scope)


def build(workdir: Path | None = None) -> list[Case]:
    logging.getLogger("asgi_auth").setLevel(logging.WARNING)
    tmp = workdir or Path(tempfile.mkdtemp(prefix="authgate-bench-"))
    store = SQLiteKeyStore(tmp / "keys.db")
    api_key = store.create("bench", ["items:read"]).key
    keys = Keys()
    key_auth = APIKeyAuth(store)
    jwt_es = keys.auth("ES256")

    k_hdr = [(b"x-api-key", api_key.encode())]

    def bearer(alg: str) -> list[tuple[bytes, bytes]]:
        return [(b"authorization", f"Bearer {keys.tokens[alg]}".encode())]

    asgi_key = AuthMiddleware(bare_asgi, authenticators=[key_auth], public_paths=["/health"])
    asgi_jwt = AuthMiddleware(bare_asgi, authenticators=[jwt_es])
    cases = [
        Case("bare", "asgi", asgi_runner(bare_asgi, http_scope())),
        Case("API key, cached", "asgi", asgi_runner(asgi_key, http_scope(headers=k_hdr))),
        Case("public path", "asgi", asgi_runner(asgi_key, http_scope("/health"))),
        Case(
            "JWT ES256, cached", "asgi", asgi_runner(asgi_jwt, http_scope(headers=bearer("ES256")))
        ),
    ]
    for alg in ("RS256", "ES256", "EdDSA"):
        auth = keys.auth(alg)
        app = AuthMiddleware(bare_asgi, authenticators=[auth])
        cases.append(
            Case(
                f"JWT {alg}, first-seen",
                "asgi",
                first_seen(app, auth, http_scope(headers=bearer(alg))),
            )
        )

    wsgi_key = WSGIAuthMiddleware(bare_wsgi, authenticators=[key_auth])
    wsgi_jwt = WSGIAuthMiddleware(bare_wsgi, authenticators=[jwt_es])
    cases += [
        Case("bare", "wsgi", wsgi_runner(bare_wsgi, environ())),
        Case("API key, cached", "wsgi", wsgi_runner(wsgi_key, environ(X_API_KEY=api_key))),
        Case(
            "JWT ES256, cached",
            "wsgi",
            wsgi_runner(wsgi_jwt, environ(AUTHORIZATION=f"Bearer {keys.tokens['ES256']}")),
        ),
    ]
    cases += framework_cases(key_auth, jwt_es, api_key, keys)

    # Floors: what a check costs at the very least.
    digests = {hashlib.sha256(api_key.encode()).digest(): "bench"}
    stored = hashlib.sha256(api_key.encode()).digest()

    def sha_dict() -> None:
        d = hashlib.sha256(api_key.encode()).digest()
        if digests.get(d) is not None:
            hmac.compare_digest(d, stored)

    cases.append(Case("SHA-256 + dict + compare", "floor", call_runner(sha_dict)))
    for alg in ("RS256", "ES256", "EdDSA"):
        cases.append(Case(f"raw {alg} verify", "floor", call_runner(raw_verify(keys, alg))))
        pub = keys.private[alg].public_key()
        token = keys.tokens[alg]
        cases.append(
            Case(
                f"PyJWT jwt.decode {alg}",
                "floor",
                call_runner(
                    lambda t=token, k=pub, a=alg: pyjwt.decode(
                        t, k, algorithms=[a], audience="api", issuer=ISSUER
                    )
                ),
            )
        )
    return cases


def framework_cases(
    key_auth: APIKeyAuth, jwt_auth: JWTAuth, api_key: str, keys: Keys
) -> list[Case]:
    from fastapi import FastAPI
    from flask import Flask

    def fastapi_app() -> FastAPI:
        app = FastAPI()

        @app.get("/items")
        async def items() -> dict[str, str]:
            return {"ok": "yes"}

        return app

    bare = fastapi_app()
    with_key = fastapi_app()
    with_key.add_middleware(AuthMiddleware, authenticators=[key_auth])
    with_jwt = fastapi_app()
    with_jwt.add_middleware(AuthMiddleware, authenticators=[jwt_auth])

    def flask_app() -> Flask:
        app = Flask("bench")

        @app.get("/items")
        def items() -> dict[str, str]:
            return {"ok": "yes"}

        return app

    fl_bare = flask_app()
    fl_key = flask_app()
    fl_key.wsgi_app = WSGIAuthMiddleware(fl_key.wsgi_app, authenticators=[key_auth])  # type: ignore[method-assign]
    bearer = [(b"authorization", f"Bearer {keys.tokens['ES256']}".encode())]
    return [
        Case("bare", "fastapi", asgi_runner(bare, http_scope())),
        Case(
            "API key, cached",
            "fastapi",
            asgi_runner(with_key, http_scope(headers=[(b"x-api-key", api_key.encode())])),
        ),
        Case("JWT ES256, cached", "fastapi", asgi_runner(with_jwt, http_scope(headers=bearer))),
        Case("bare", "flask", wsgi_runner(fl_bare.wsgi_app, environ())),
        Case("API key, cached", "flask", wsgi_runner(fl_key.wsgi_app, environ(X_API_KEY=api_key))),
    ]

"""Peer apps: authentication as a user of each library writes it, following its documented
recipe, on the same `/items` route that returns `{"ok": "yes"}` as the bare apps.

Each protected route answers 200 only for an authenticated request, so a runner's status
check proves the peer really authenticated (`tests/test_benchmark_peers.py` checks that a
missing or tampered credential is refused).
"""

# No `from __future__ import annotations`: FastAPI reads the dependency annotations of the
# functions made inside the factories below, which string annotations would hide.

import hashlib
import hmac
import json
import threading
from collections.abc import Mapping, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import jwt
from authlib.integrations.flask_oauth2 import (  # type: ignore[import-untyped]
    ResourceProtector,
)
from authlib.oauth2.rfc9068 import JWTBearerTokenValidator  # type: ignore[import-untyped]
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from flask import Flask
from flask_jwt_extended import JWTManager, create_access_token, jwt_required
from joserfc.jwk import KeySet
from starlette.applications import Starlette
from starlette.authentication import (
    AuthCredentials,
    AuthenticationBackend,
    AuthenticationError,
    BaseUser,
    SimpleUser,
    requires,
)
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ITEMS = {"ok": "yes"}

# -- Starlette --------------------------------------------------------------------------


async def _items(request: Request) -> JSONResponse:
    return JSONResponse(ITEMS)


@requires("authenticated")
async def _protected_items(request: Request) -> JSONResponse:
    return JSONResponse(ITEMS)


def starlette_app(middleware: Sequence[Middleware] = (), *, protected: bool = False) -> Starlette:
    """The bare Starlette app, or (`protected`) its route behind `@requires("authenticated")`."""
    endpoint = _protected_items if protected else _items
    return Starlette(routes=[Route("/items", endpoint)], middleware=list(middleware))


def _unauthorized(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    # Starlette answers 400 by default; an API says 401, as its docs show with `on_error`.
    return JSONResponse(
        {"detail": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
    )


def _bearer(conn: HTTPConnection) -> str | None:
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    return token if scheme.lower() == "bearer" and token else None


class PyJWTBackend(AuthenticationBackend):
    """`Authorization: Bearer` checked with `jwt.decode` against one known key."""

    def __init__(self, key: Any, algorithm: str, audience: str, issuer: str) -> None:
        self.key = key
        self.algorithm = algorithm
        self.audience = audience
        self.issuer = issuer

    def signing_key(self, token: str) -> Any:
        return self.key

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        token = _bearer(conn)
        if token is None:
            return None
        try:
            claims = jwt.decode(
                token,
                self.signing_key(token),
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
            )
        except jwt.PyJWTError as exc:
            raise AuthenticationError("invalid token") from exc
        return AuthCredentials(["authenticated", *claims.get("scope", "").split()]), SimpleUser(
            claims["sub"]
        )


class PyJWKClientBackend(PyJWTBackend):
    """As `PyJWTBackend`, with the key found by `kid` in the issuer's JWKS (PyJWT's recipe:
    `PyJWKClient(jwks_url).get_signing_key_from_jwt(token).key`)."""

    def __init__(self, jwks_url: str, algorithm: str, audience: str, issuer: str) -> None:
        super().__init__(None, algorithm, audience, issuer)
        self.jwks = jwt.PyJWKClient(jwks_url)

    def signing_key(self, token: str) -> Any:
        return self.jwks.get_signing_key_from_jwt(token).key


class APIKeyBackend(AuthenticationBackend):
    """`X-API-Key` as users write it: SHA-256 of the key, a dict lookup by digest, and a
    constant-time compare."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        # Only digests are kept: digest -> (digest, client name).
        digests = {hashlib.sha256(key.encode()).digest(): name for key, name in keys.items()}
        self.keys = {digest: (digest, name) for digest, name in digests.items()}

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, BaseUser] | None:
        key = conn.headers.get("x-api-key")
        if key is None:
            return None
        digest = hashlib.sha256(key.encode()).digest()
        entry = self.keys.get(digest)
        if entry is None or not hmac.compare_digest(digest, entry[0]):
            raise AuthenticationError("invalid API key")
        return AuthCredentials(["authenticated"]), SimpleUser(entry[1])


def starlette_backend_app(backend: AuthenticationBackend) -> Starlette:
    """`AuthenticationMiddleware` with `backend`, in front of a `@requires` route."""
    return starlette_app(
        [Middleware(AuthenticationMiddleware, backend=backend, on_error=_unauthorized)],
        protected=True,
    )


# -- FastAPI ----------------------------------------------------------------------------

_bearer_scheme = HTTPBearer()


def fastapi_pyjwt_app(
    key: Any, algorithm: str, audience: str, issuer: str, *, sync: bool = False
) -> FastAPI:
    """FastAPI's recipe: an `HTTPBearer` dependency whose credentials `jwt.decode` checks,
    as an `async def` dependency or (`sync`) a plain `def` one, which FastAPI runs in its
    threadpool."""

    def decode(token: str) -> dict[str, Any]:
        try:
            return jwt.decode(token, key, algorithms=[algorithm], audience=audience, issuer=issuer)
        except jwt.PyJWTError as exc:
            raise HTTPException(
                status_code=401,
                detail="invalid token",
                headers={"WWW-Authenticate": "Bearer"},
            ) from exc

    async def current_user_async(
        creds: Annotated[HTTPAuthorizationCredentials, Depends(_bearer_scheme)],
    ) -> dict[str, Any]:
        return decode(creds.credentials)

    def current_user_sync(
        creds: Annotated[HTTPAuthorizationCredentials, Depends(_bearer_scheme)],
    ) -> dict[str, Any]:
        return decode(creds.credentials)

    current_user = current_user_sync if sync else current_user_async
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/items")
    async def items(user: Annotated[dict[str, Any], Depends(current_user)]) -> dict[str, str]:
        return ITEMS

    return app


# -- Flask ------------------------------------------------------------------------------


def flask_jwt_extended_app(config: Mapping[str, Any]) -> Flask:
    """flask-jwt-extended's recipe: `JWTManager(app)` and `@jwt_required()`; `config` sets
    `JWT_SECRET_KEY` (HS256, its default) or `JWT_ALGORITHM` and the key pair."""
    app = Flask("bench")
    app.config.update(config)
    JWTManager(app)

    @app.get("/items")
    @jwt_required()  # type: ignore[untyped-decorator]
    def items() -> dict[str, str]:
        return ITEMS

    return app


def flask_jwt_extended_token(app: Flask, identity: str = "user-1") -> str:
    """A token as the app itself issues it (its claims, algorithm and key)."""
    with app.app_context():
        token: str = create_access_token(identity=identity, expires_delta=timedelta(hours=2))
    return token


class StaticJWKSValidator(JWTBearerTokenValidator):  # type: ignore[misc]
    """Authlib's RFC 9068 validator; `get_jwks` is the method Authlib asks users to write.
    It returns a `joserfc` `KeySet` imported once: Authlib deprecates returning the JWKS
    dict, which it would import again on every request."""

    def __init__(self, jwks: Mapping[str, Any], issuer: str, resource_server: str) -> None:
        super().__init__(issuer=issuer, resource_server=resource_server)
        self._jwks = KeySet.import_key_set(dict(jwks))  # type: ignore[arg-type]

    def get_jwks(self) -> KeySet:
        return self._jwks


def authlib_app(jwks: Mapping[str, Any], issuer: str, resource_server: str) -> Flask:
    """Authlib's recipe: a `ResourceProtector` with the RFC 9068 JWT bearer validator,
    protecting the route with `@require_oauth()`."""
    require_oauth = ResourceProtector()
    require_oauth.register_token_validator(StaticJWKSValidator(jwks, issuer, resource_server))
    app = Flask("bench")

    @app.get("/items")
    @require_oauth()  # type: ignore[untyped-decorator]
    def items() -> dict[str, str]:
        return ITEMS

    return app


# -- an issuer's JWKS endpoint ----------------------------------------------------------


class JWKSServer:
    """Serves one JWKS document on 127.0.0.1 (a free port) from a daemon thread until
    `close()`."""

    def __init__(self, jwks: Mapping[str, Any]) -> None:
        body = json.dumps(jwks).encode()
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # quiet: the benchmark prints a table on stdout

        self.requests = 0  # how many times the JWKS was fetched
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}/.well-known/jwks.json"
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="bench-jwks-server",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

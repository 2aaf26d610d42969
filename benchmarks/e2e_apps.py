"""The apps that `benchmarks.e2e` serves with real servers, as `benchmarks.e2e_apps:NAME`.

Servers run in subprocesses, so each app is a module-level name, built on first access
(PEP 562) from the JSON file named by `AUTHGATE_E2E_CONFIG`, which the runner writes: the
public keys of the token signers, the issuer and audience, and the plaintext API key. A
bare app needs no configuration. Every protected app answers 200 on `/items` with the
credential and 401 without it; the runner checks both before measuring.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from functools import cache
from typing import TYPE_CHECKING, Any

from asgi_auth import APIKeyAuth, AuthMiddleware, JWTAuth
from asgi_auth.keys import MemoryKeyStore
from wsgi_auth import AuthMiddleware as WSGIAuthMiddleware

from .apps import bare_asgi

if TYPE_CHECKING:
    from flask import Flask
    from starlette.applications import Starlette

CONFIG_ENV = "AUTHGATE_E2E_CONFIG"
PATH = "/items"
# Longer than any run: the "cached" apps must serve cache hits throughout.
CACHE_TTL = 3600.0


@cache
def config() -> dict[str, str]:
    path = os.environ.get(CONFIG_ENV)
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set: the e2e runner writes it")
    with open(path, encoding="utf-8") as f:
        data: dict[str, str] = json.load(f)
    return data


def jwt_auth() -> JWTAuth:
    """ES256 with a static public key, as in `benchmarks.jwt_cases`."""
    c = config()
    return JWTAuth(
        c["issuer"],
        c["audience"],
        algorithms=["ES256"],
        keys=c["es256_public_pem"].encode(),
        cache_ttl=CACHE_TTL,
    )


def key_auth() -> APIKeyAuth:
    store = MemoryKeyStore()
    store.add(config()["api_key"], "bench", ["items:read"])
    return APIKeyAuth(store, cache_ttl=CACHE_TTL)


# -- Starlette: the bare app, the PyJWT recipe, and authgate in front of it -------------


def starlette_app(*, recipe: bool = False) -> Starlette:
    """A one-route Starlette app; with `recipe`, Starlette's `AuthenticationMiddleware`
    with the usual PyJWT backend: RS256 `jwt.decode` on every request, no cache."""
    import jwt as pyjwt
    from starlette.applications import Starlette
    from starlette.authentication import (
        AuthCredentials,
        AuthenticationBackend,
        AuthenticationError,
        SimpleUser,
        requires,
    )
    from starlette.middleware import Middleware
    from starlette.middleware.authentication import AuthenticationMiddleware
    from starlette.requests import HTTPConnection, Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def items(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    if not recipe:
        return Starlette(routes=[Route(PATH, items)])

    c = config()
    public_key = c["rs256_public_pem"]

    class JWTBackend(AuthenticationBackend):
        async def authenticate(
            self, conn: HTTPConnection
        ) -> tuple[AuthCredentials, SimpleUser] | None:
            scheme, _, token = conn.headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not token:
                return None
            try:
                claims = pyjwt.decode(
                    token,
                    public_key,
                    algorithms=["RS256"],
                    audience=c["audience"],
                    issuer=c["issuer"],
                )
            except pyjwt.InvalidTokenError as exc:
                raise AuthenticationError("invalid token") from exc
            scopes = ["authenticated", *str(claims.get("scope", "")).split()]
            return AuthCredentials(scopes), SimpleUser(str(claims["sub"]))

    protected = requires("authenticated", status_code=401)(items)
    return Starlette(
        routes=[Route(PATH, protected)],
        middleware=[Middleware(AuthenticationMiddleware, backend=JWTBackend())],
    )


def starlette_authgate() -> Any:
    return AuthMiddleware(starlette_app(), authenticators=[jwt_auth()])


# -- Flask ------------------------------------------------------------------------------


def flask_app() -> Flask:
    from flask import Flask

    app = Flask("bench")

    @app.get(PATH)
    def items() -> str:
        return "ok"

    return app


def flask_protected(auth: Callable[[], Any]) -> Callable[[], Any]:
    return lambda: WSGIAuthMiddleware(flask_app(), authenticators=[auth()])


# -- the names servers import -----------------------------------------------------------

FACTORIES: dict[str, Callable[[], Any]] = {
    "bare_asgi": lambda: bare_asgi,
    "jwt_asgi": lambda: AuthMiddleware(bare_asgi, authenticators=[jwt_auth()]),
    "key_asgi": lambda: AuthMiddleware(bare_asgi, authenticators=[key_auth()]),
    "bare_starlette": starlette_app,
    "pyjwt_starlette": lambda: starlette_app(recipe=True),
    "jwt_starlette": starlette_authgate,
    "bare_flask": flask_app,
    "key_flask": flask_protected(key_auth),
    "jwt_flask": flask_protected(jwt_auth),
}
_built: dict[str, Any] = {}


def __getattr__(name: str) -> Any:
    factory = FACTORIES.get(name)
    if factory is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _built:
        _built[name] = factory()
    return _built[name]


def __dir__() -> Iterable[str]:
    return [*globals(), *FACTORIES]

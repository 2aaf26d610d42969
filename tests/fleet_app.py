"""The app that tests/test_fleet_processes.py serves from real uvicorn and gunicorn
processes: each process imports this file and builds its app from environment variables,
as every worker of a fleet builds its own from the same configuration.

- `FLEET_REDIS`: the Redis URL shared by the DPoP replay caches and the throttle.
- `FLEET_NAMESPACE`: the replay caches' namespace (each test run its own).
- `FLEET_DB`: an SQLite key store file (API keys; it does not depend on Redis).
- `FLEET_JWK`: the issuers' public JWK (JSON); `FLEET_NONCE_SECRET`: hex, shared.
- `FLEET_LIMIT`, `FLEET_FAIL`: the throttle's limit and its `fail=` option.

Two issuers: tokens from `PLAIN_ISSUER` need a DPoP proof without a nonce; those from
`NONCE_ISSUER` need a server nonce in it. The peer 127.0.0.1 (the test client) is a
trusted proxy, so each test names its client address in `X-Forwarded-For`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from asgi_auth import APIKeyAuth, JWTAuth
from asgi_auth.dpop import DPoPVerifier, RedisReplayCache
from asgi_auth.keys import SQLiteKeyStore
from asgi_auth.throttle import Throttle
from asgi_auth.types import Message, Receive, Scope, Send

PLAIN_ISSUER = "https://plain.fleet.test"
NONCE_ISSUER = "https://nonce.fleet.test"
AUDIENCE = "api"


def _authenticators() -> tuple[list[Any], dict[str, Any]]:
    env = os.environ
    url = env["FLEET_REDIS"]
    namespace = env["FLEET_NAMESPACE"]
    jwk = json.loads(env["FLEET_JWK"])
    secret = bytes.fromhex(env["FLEET_NONCE_SECRET"])

    def jwt_auth(issuer: str, require_nonce: bool) -> JWTAuth:
        verifier = DPoPVerifier(
            replay_cache=RedisReplayCache(url, namespace=namespace),
            require_nonce=require_nonce,
            nonce_secret=secret,
        )
        return JWTAuth(
            issuer,
            AUDIENCE,
            algorithms=["ES256"],
            keys=jwk,
            dpop="required",
            dpop_verifier=verifier,
        )

    authenticators = [
        APIKeyAuth(SQLiteKeyStore(Path(env["FLEET_DB"]))),
        jwt_auth(PLAIN_ISSUER, False),
        jwt_auth(NONCE_ISSUER, True),
    ]
    fail: Literal["closed", "open"] = "open" if env.get("FLEET_FAIL") == "open" else "closed"
    options: dict[str, Any] = {
        "trusted_proxies": ["127.0.0.1"],
        "throttle": Throttle(env["FLEET_LIMIT"], storage=url, per="address", fail=fail),
    }
    return authenticators, options


def asgi_app() -> Any:
    """For `uvicorn --factory tests.fleet_app:asgi_app`."""
    from asgi_auth import AuthMiddleware

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        auth = scope["auth"]
        body = json.dumps({"subject": auth.subject, "method": auth.method}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    authenticators, options = _authenticators()
    gate = AuthMiddleware(app, authenticators=authenticators, public_paths=["/health"], **options)

    async def tagged(scope: Scope, receive: Receive, send: Send) -> None:
        """Every answer, the middleware's refusals too, names the process that gave it."""

        async def tag(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (b"x-worker", b"%d" % os.getpid())],
                }
            await send(message)

        await gate(scope, receive, tag if scope["type"] == "http" else send)

    return tagged


def wsgi_app() -> Any:
    """For `gunicorn 'tests.fleet_app:wsgi_app()'`.

    `/hold` (public) answers only once its request body has arrived: a test sends the
    headers with `Expect: 100-continue`, reads the `100 Continue` that tells it a worker
    took the request, and keeps that (sync) worker busy until it sends the body.
    """
    from wsgi_auth import AuthMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/hold":
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        auth = environ.get("wsgi_auth.identity")
        subject, method = (auth.subject, auth.method) if auth is not None else (None, None)
        body = json.dumps({"subject": subject, "method": method}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    authenticators, options = _authenticators()
    gate = AuthMiddleware(
        app, authenticators=authenticators, public_paths=["/health", "/hold"], **options
    )

    def tagged(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        """Every answer, the middleware's refusals too, names the process that gave it."""

        def tag(status: str, headers: list[tuple[str, str]], *exc_info: Any) -> Any:
            return start_response(status, [*headers, ("X-Worker", str(os.getpid()))], *exc_info)

        return gate(environ, tag)

    return tagged

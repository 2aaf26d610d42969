"""`authgate demo`: a small API protected by API keys from a SQLite store."""

from __future__ import annotations

import itertools
import socket
import sys
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .apikey import APIKeyAuth
from .identity import Identity
from .keys import SQLiteKeyStore
from .middleware import AuthMiddleware
from .rules import Rule


def build_app(store: SQLiteKeyStore) -> AuthMiddleware:
    """The demo API: `/health` public, `/items` read and write scopes, `/me` any key."""
    items: list[dict[str, Any]] = [{"id": 1, "name": "first item"}]
    ids = itertools.count(2)

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def me(request: Request) -> JSONResponse:
        ident: Identity = request.auth
        return JSONResponse(
            {
                "subject": ident.subject,
                "name": ident.name,
                "key_id": ident.key_id,
                "scopes": sorted(ident.scopes),
            }
        )

    async def list_items(request: Request) -> JSONResponse:
        return JSONResponse(items)

    async def add_item(request: Request) -> JSONResponse:
        try:
            body = await request.json()
            name = str(body["name"])[:200]
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": 'send {"name": "..."}'}, status_code=422)
        item = {"id": next(ids), "name": name, "created_by": request.auth.subject}
        items.append(item)
        return JSONResponse(item, status_code=201)

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/me", me),
            Route("/items", list_items, methods=["GET"]),
            Route("/items", add_item, methods=["POST"]),
        ]
    )
    return AuthMiddleware(
        app,
        authenticators=[APIKeyAuth(store, scheme="ApiKey")],
        public_paths=["/health"],
        rules=[
            Rule("/items", methods=["GET", "HEAD"], scopes=["items:read"]),
            Rule("/items", methods=["POST"], scopes=["items:write"]),
        ],
    )


def run_demo(*, host: str = "127.0.0.1", port: int = 8000, db: str = "authgate-demo.db") -> int:
    try:
        import uvicorn
    except ImportError:
        print("authgate demo needs uvicorn: pip install 'authgate[demo]'", file=sys.stderr)
        return 1
    # The socket is bound before the banner, so the banner names the port that serves
    # (--port 0 takes any free one) and a port in use fails before keys are made.
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        print(f"authgate demo: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    sock.listen(128)  # connections made once the banner is out wait for the server
    port = sock.getsockname()[1]
    store = SQLiteKeyStore(db)
    full = store.create("demo-admin", ["items:read", "items:write"])
    reader = store.create("demo-reader", ["items:read"])
    base = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    print(
        f"""authgate demo: API on {base}, keys in {db}

read-write key: {full.key}
read-only key:  {reader.key}

Try:
  curl -i {base}/health
  curl -i {base}/items
  curl -i -H 'X-API-Key: {full.key}' {base}/items
  curl -i -H 'X-API-Key: {reader.key}' {base}/me
  curl -i -H 'X-API-Key: {reader.key}' -X POST -H 'Content-Type: application/json' \\
       -d '{{"name": "denied"}}' {base}/items
  curl -i -H 'Authorization: ApiKey {full.key}' -X POST -H 'Content-Type: application/json' \\
       -d '{{"name": "hello"}}' {base}/items
  authgate keys list --db {db}
  authgate keys revoke {reader.record.key_id} --db {db}

Ctrl-C stops the server.""",
        flush=True,
    )
    server = uvicorn.Server(uvicorn.Config(build_app(store), log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    return 0

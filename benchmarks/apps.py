"""The apps under test and the request templates they are called with.

Every "bare" app here has a twin behind authgate built from the same factory, so the
difference between the two is the middleware and nothing else.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from asgi_auth.types import Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI
    from flask import Flask

Headers = list[tuple[bytes, bytes]]

# What a browser-less client typically sends; the middleware scans every header.
COMMON_HEADERS: Headers = [
    (b"host", b"127.0.0.1:8000"),
    (b"user-agent", b"bench/1.0"),
    (b"accept", b"*/*"),
    (b"accept-encoding", b"gzip, deflate"),
    (b"connection", b"keep-alive"),
]


# -- ASGI -------------------------------------------------------------------------------


async def bare_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    """The smallest useful ASGI app: a start message and a body."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"2")],
        }
    )
    await send({"type": "http.response.body", "body": b"ok"})


def http_scope(
    path: str = "/items", headers: Headers | None = None, method: str = "GET"
) -> dict[str, Any]:
    """An HTTP scope template. Runners hand each request a shallow copy of it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [*COMMON_HEADERS, *(headers or [])],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def fastapi_app() -> FastAPI:
    from fastapi import FastAPI

    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/items")
    async def items() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "up"}

    return app


# -- WSGI -------------------------------------------------------------------------------


def bare_wsgi(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    """The smallest useful WSGI app."""
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def environ(path: str = "/items", method: str = "GET", **headers: str) -> dict[str, Any]:
    """A WSGI environ template (`X_API_KEY="..."` becomes `HTTP_X_API_KEY`)."""
    env: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "*/*",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate",
        "HTTP_CONNECTION": "keep-alive",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),  # GET: never read, so sharing it is harmless
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    env.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return env


def flask_app() -> Flask:
    from flask import Flask

    app = Flask("bench")

    @app.get("/items")
    def items() -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "up"}

    return app

"""The same small API on every router the README names, behind authgate, called in-process
with the scope or environ a real server builds from a raw request target.

Each handler records the route it serves, so a test sees what the router dispatched, not
what authgate guessed. Routes: `/admin` and `/admin/{page}` (scope `admin`), `/items` and
`/items/{id}` (POST needs `items:write`), `/health` (public). The default is public, so
that a path the rules miss shows up as a request that reached a protected handler.
"""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import unquote, unquote_to_bytes

from asgi_auth import APIKeyAuth, Rule
from asgi_auth import AuthMiddleware as ASGIAuth
from asgi_auth.keys import MemoryKeyStore
from wsgi_auth import AuthMiddleware as WSGIAuth

try:  # Litestar 2.2x deprecates path parameters known by their name alone
    from litestar.params import PathParameter

    PathStr = Annotated[str, PathParameter()]
except ImportError:  # older Litestar: the name alone
    PathStr = str  # type: ignore[misc]

#: The scopes each route's handler needs, by route name and method.
NEEDS = {
    ("admin", "GET"): {"admin"},
    ("admin", "POST"): {"admin"},
    ("admin-page", "GET"): {"admin"},
    ("admin-page", "POST"): {"admin"},
    ("items", "POST"): {"items:write"},
    ("item", "POST"): {"items:write"},
}

STORE = MemoryKeyStore()
KEYS = {
    "none": (None, frozenset[str]()),
    "reader": (STORE.create("reader", ["items:read"]).key, frozenset({"items:read"})),
    "writer": (STORE.create("writer", ["items:write"]).key, frozenset({"items:write"})),
    "admin": (STORE.create("admin", ["admin"]).key, frozenset({"admin"})),
}


def rules(prefix: str = "") -> dict[str, Any]:
    """The gate's options for routes written under `prefix` (as the router sees them)."""
    return {
        "rules": [
            Rule(prefix + "/admin", scopes=["admin"]),
            Rule(prefix + "/items", methods=["POST"], scopes=["items:write"]),
        ],
        "default": "public",
    }


@dataclass
class Setup:
    """One router behind authgate. `call(method, target, key)` sends a request whose
    target is `prefix` + the generated path and returns `(status, route reached)`."""

    call: Callable[[str, str, str | None], tuple[int, str | None]]
    prefix: str = ""
    #: Examples run, for the report.
    examples: int = field(default=0)


# -- calling ----------------------------------------------------------------------------


def asgi_request(
    app: Any, method: str, raw: str, key: str | None, *, root_path: str = ""
) -> tuple[int, str | None]:
    """`(status, route)` for a request target `raw` as uvicorn hands it over: `path` is
    the percent-decoded target, `raw_path` the bytes, `root_path` in front of both."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": root_path + unquote(raw),
        "raw_path": (root_path + raw).encode("latin-1"),
        "root_path": root_path,
        "query_string": b"",
        "headers": [(b"host", b"testserver")]
        + ([(b"x-api-key", key.encode())] if key is not None else []),
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
        "state": {},
    }
    status: list[int] = []
    done = asyncio.Event()
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    ROUTED.clear()
    asyncio.run(app(scope, receive, send))
    return status[0], (ROUTED[0] if ROUTED else None)


def wsgi_request(
    app: Any, method: str, raw: str, key: str | None, *, script_name: str = ""
) -> tuple[int, str | None]:
    """`(status, route)` for a request target `raw` as gunicorn hands it over (PEP 3333:
    PATH_INFO is the percent-decoded bytes as latin-1)."""
    environ = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": unquote_to_bytes(raw).decode("latin-1"),
        "RAW_URI": script_name + raw,
        "QUERY_STRING": "",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "testserver",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    if key is not None:
        environ["HTTP_X_API_KEY"] = key
    status: list[str] = []
    ROUTED.clear()
    body = app(environ, lambda s, h, *a: status.append(s))
    try:
        b"".join(body)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    return int(status[0][:3]), (ROUTED[0] if ROUTED else None)


#: The route the last request reached (handlers run in the test's thread, or in one
#: thread a framework hands a sync view to, one request at a time).
ROUTED: list[str] = []


def _hit(name: str) -> str:
    ROUTED.append(name)
    return name


def auth() -> APIKeyAuth:
    return APIKeyAuth(STORE)


# -- the routers ------------------------------------------------------------------------


def starlette_app(prefix: str = "") -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    def handler(name: str) -> Any:
        async def endpoint(request: Request) -> PlainTextResponse:
            return PlainTextResponse(_hit(name))

        return endpoint

    return Starlette(
        routes=[
            Route(prefix + "/admin", handler("admin"), methods=["GET", "POST"]),
            Route(prefix + "/admin/{page}", handler("admin-page"), methods=["GET", "POST"]),
            Route(prefix + "/items", handler("items"), methods=["GET", "POST"]),
            Route(prefix + "/items/{id}", handler("item"), methods=["GET", "POST"]),
            Route(prefix + "/health", handler("health")),
        ]
    )


def flask_app() -> Any:
    from flask import Flask

    app = Flask("routers")
    for rule, name in [
        ("/admin", "admin"),
        ("/admin/<page>", "admin-page"),
        ("/items", "items"),
        ("/items/<id>", "item"),
        ("/health", "health"),
    ]:
        app.add_url_rule(
            rule, name, (lambda n: lambda **kw: _hit(n))(name), methods=["GET", "POST"]
        )
    return app


def _falcon_resources(add: Callable[[str, Any], None], prefix: str, *, asgi: bool) -> None:
    class Resource:
        def __init__(self, name: str) -> None:
            self.name = name

    for path, name in [
        ("/admin", "admin"),
        ("/admin/{page}", "admin-page"),
        ("/items", "items"),
        ("/items/{id}", "item"),
        ("/health", "health"),
    ]:
        resource = Resource(name)
        if asgi:

            async def on_any(req: Any, resp: Any, _r: Any = resource, **kw: Any) -> None:
                resp.text = _hit(_r.name)

        else:

            def on_any(req: Any, resp: Any, _r: Any = resource, **kw: Any) -> None:  # type: ignore[misc]
                resp.text = _hit(_r.name)

        resource.on_get = on_any  # type: ignore[attr-defined]
        resource.on_post = on_any  # type: ignore[attr-defined]
        add(prefix + path, resource)


def falcon_asgi_app(prefix: str = "") -> Any:
    import falcon.asgi

    app = falcon.asgi.App()
    _falcon_resources(app.add_route, prefix, asgi=True)
    return app


def falcon_wsgi_app() -> Any:
    import falcon

    app = falcon.App()
    _falcon_resources(app.add_route, "", asgi=False)
    return app


def litestar_app(prefix: str = "", middleware: list[Any] | None = None) -> Any:
    from litestar import Litestar, route

    def handler(path: str, name: str) -> Any:
        @route(
            prefix + path,
            http_method=["GET", "POST"],
            status_code=200,
            sync_to_thread=False,
            name=name,
        )
        def endpoint() -> str:
            return _hit(name)

        return endpoint

    @route(
        prefix + "/admin/{page:str}",
        http_method=["GET", "POST"],
        status_code=200,
        sync_to_thread=False,
    )
    def admin_page(page: PathStr) -> str:
        return _hit("admin-page")

    @route(
        prefix + "/items/{id:str}",
        http_method=["GET", "POST"],
        status_code=200,
        sync_to_thread=False,
    )
    def item(id: PathStr) -> str:
        return _hit("item")

    return Litestar(
        [
            handler("/admin", "admin"),
            admin_page,
            handler("/items", "items"),
            item,
            handler("/health", "health"),
        ],
        middleware=middleware or [],
        logging_config=None,
        debug=False,
    )


def django_app() -> Any:
    """Django's ASGI handler over `tests.routers_django` URLs (settings made once)."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DEBUG=False,
            ROOT_URLCONF="tests.routers_django",
            ALLOWED_HOSTS=["*"],
            SECRET_KEY="routers-test-" + "x" * 40,
            MIDDLEWARE=[],
            INSTALLED_APPS=[],
            USE_TZ=True,
        )
        django.setup()
    from django.core.handlers.asgi import ASGIHandler

    return ASGIHandler()


def _asgi(
    app: Any,
    *,
    root_path: str = "",
    route_prefix: str = "",
    target_prefix: str | None = None,
    wrap: bool = True,
) -> Setup:
    """`app` behind authgate (unless it carries authgate inside), served under
    `root_path` (uvicorn --root-path, which it puts in front of the client's path), with
    routes and rules written under `route_prefix`; clients put `target_prefix` (default:
    `route_prefix`) in front of a generated path."""
    if wrap:
        app = ASGIAuth(app, authenticators=[auth()], **rules(route_prefix))

    def call(method: str, target: str, key: str | None) -> tuple[int, str | None]:
        return asgi_request(app, method, target, key, root_path=root_path)

    return Setup(call, route_prefix if target_prefix is None else target_prefix)


def _wsgi(app: Any) -> Setup:
    wrapped = WSGIAuth(app, authenticators=[auth()], **rules())

    def call(method: str, target: str, key: str | None) -> tuple[int, str | None]:
        return wsgi_request(wrapped, method, target, key)

    return Setup(call)


def _litestar_inner(root_path: str) -> Setup:
    """Litestar with authgate in its own middleware list: Litestar has taken `root_path`
    off `scope["path"]` before authgate sees it. Routes live under /api, so under root
    path /api a client asks for /api/api/admin."""
    from litestar.middleware import DefineMiddleware

    inner = DefineMiddleware(ASGIAuth, authenticators=[auth()], **rules("/api"))
    return _asgi(
        litestar_app("/api", middleware=[inner]),
        root_path=root_path,
        route_prefix="/api",
        wrap=False,
    )


def _django_force_script_name() -> Setup:
    """Django ASGI with FORCE_SCRIPT_NAME="/api" and no --root-path: Django 5 routes
    /api/items as /items (Django 4.2 routed on the whole path, so clients there ask for
    /items)."""
    import django
    from django.test.utils import override_settings

    app = ASGIAuth(django_app(), authenticators=[auth()], **rules())

    def call(method: str, target: str, key: str | None) -> tuple[int, str | None]:
        with override_settings(FORCE_SCRIPT_NAME="/api"):
            return asgi_request(app, method, target, key)

    return Setup(call, "/api" if django.VERSION >= (5, 0) else "")


def setups() -> dict[str, Setup]:
    """Every router, and the ways of mounting it that make them read paths differently."""
    return {
        "starlette": _asgi(starlette_app()),
        "starlette --root-path": _asgi(starlette_app(), root_path="/api"),
        "flask (werkzeug)": _wsgi(flask_app().wsgi_app),
        "falcon asgi": _asgi(falcon_asgi_app()),
        # Falcon routes on the whole path, root path included: its routes say /api.
        "falcon asgi --root-path": _asgi(
            falcon_asgi_app("/api"), root_path="/api", route_prefix="/api", target_prefix=""
        ),
        "falcon wsgi": _wsgi(falcon_wsgi_app()),
        "litestar": _asgi(litestar_app()),
        "litestar --root-path": _asgi(litestar_app(), root_path="/api"),
        "litestar, authgate inside, --root-path": _litestar_inner("/api"),
        "django asgi": _asgi(django_app()),
        "django asgi --root-path": _asgi(django_app(), root_path="/api"),
        "django asgi FORCE_SCRIPT_NAME": _django_force_script_name(),
    }

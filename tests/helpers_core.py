"""Shared helpers for the core tests: a fake clock, counting/failing key stores, and raw
ASGI/WSGI calls that hand the middleware exactly the scope or environ a server would.

Raw calls (no test client in between) are what the bypass and bad-input tests need: a
test client normalises paths and refuses odd header bytes, a raw client does not.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import asgi_auth
import wsgi_auth
from asgi_auth import Identity
from asgi_auth.keys import KeyRecord, MemoryKeyStore
from wsgi_auth import IDENTITY_KEY

Header = tuple[str, "str | bytes"]


def altered(credential: str) -> str:
    """`credential` with its last character replaced by a different one: never equal to it,
    whatever characters a random key happens to end with."""
    return credential[:-1] + ("x" if credential[-1] != "x" else "y")


class Clock:
    """A clock the tests move by hand: no sleeps anywhere."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingStore(MemoryKeyStore):
    """A memory store that counts lookups (the only store calls on the request path)."""

    local = False  # stands in for a networked store: lookups go through the driver

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.calls: list[str] = []

    def get(self, key_id: str) -> KeyRecord | None:
        self.calls.append(key_id)
        return super().get(key_id)


class FailingStore(MemoryKeyStore):
    """A store whose backend is down: every lookup raises."""

    local = False  # stands in for a networked store: lookups go through the driver

    def __init__(self, error: BaseException | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.error = error or ConnectionError("key store down")
        self.calls = 0

    def get(self, key_id: str) -> KeyRecord | None:
        self.calls += 1
        raise self.error


@dataclass
class Reply:
    """What a client got back, and whether the wrapped app ran."""

    status: int
    headers: dict[str, str]
    body: bytes
    reached: bool
    identity: Identity | None = None
    raw_headers: list[tuple[str, str]] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.body)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("latin-1")


def _headers_dict(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in pairs:
        k = k.lower()
        out[k] = f"{out[k]}, {v}" if k in out else v
    return out


# -- ASGI ---------------------------------------------------------------------------------


class ASGIApp:
    """The app behind the middleware: records each call and answers 200."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.calls.append(scope)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/plain")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})


def http_scope(
    path: str,
    *,
    method: str = "GET",
    headers: Sequence[Header] = (),
    query: str | bytes = b"",
    raw_path: bytes | None = None,
) -> dict[str, Any]:
    """An ASGI 3 HTTP scope as a server builds it; `path` goes in exactly as given."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": raw_path if raw_path is not None else path.encode("utf-8", "replace"),
        "root_path": "",
        "query_string": _as_bytes(query),
        "headers": [(k.lower().encode("latin-1"), _as_bytes(v)) for k, v in headers],
        "client": ("203.0.113.7", 50000),
        "server": ("testserver", 80),
        "state": {},
    }


def asgi_call(mw: asgi_auth.AuthMiddleware, app: ASGIApp, scope: dict[str, Any]) -> Reply:
    sent: list[dict[str, Any]] = []
    before = len(app.calls)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(mw(scope, receive, send))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in start["headers"]]
    reached = len(app.calls) > before
    return Reply(
        start["status"],
        _headers_dict(raw),
        body,
        reached,
        app.calls[-1].get("auth") if reached else None,
        raw,
    )


# -- WSGI ---------------------------------------------------------------------------------


class WSGIApp:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> list[bytes]:
        self.calls.append(environ)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]


def wsgi_environ(
    path: str,
    *,
    method: str = "GET",
    headers: Sequence[Header] = (),
    query: str | bytes = "",
) -> dict[str, Any]:
    """A PEP 3333 environ: `PATH_INFO` as given (servers decode %XX before this), header
    values as latin-1 text, repeated headers joined with ", " as WSGI servers do."""
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": _as_bytes(query).decode("latin-1"),
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "203.0.113.7",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": None,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in headers:
        key = "HTTP_" + name.upper().replace("-", "_")
        text = _as_bytes(value).decode("latin-1")
        environ[key] = f"{environ[key]}, {text}" if key in environ else text
    return environ


def wsgi_call(mw: wsgi_auth.AuthMiddleware, app: WSGIApp, environ: dict[str, Any]) -> Reply:
    got: dict[str, Any] = {}
    before = len(app.calls)

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        got["status"], got["headers"] = status, headers
        return lambda data: None

    body = b"".join(mw(environ, start_response))
    reached = len(app.calls) > before
    return Reply(
        int(got["status"].split(" ", 1)[0]),
        _headers_dict(got["headers"]),
        body,
        reached,
        app.calls[-1].get(IDENTITY_KEY) if reached else None,
        list(got["headers"]),
    )


# -- one interface over both --------------------------------------------------------------

Client = Callable[..., Reply]


def make_client(kind: str, authenticators: Sequence[Any], **options: Any) -> Client:
    """`client(path, headers=..., query=..., method=..., raw_path=...)` over the ASGI or
    the WSGI middleware, built with the same options."""
    if kind == "asgi":
        asgi_app = ASGIApp()
        amw = asgi_auth.AuthMiddleware(asgi_app, authenticators=authenticators, **options)

        def asgi_client(path: str, **kw: Any) -> Reply:
            return asgi_call(amw, asgi_app, http_scope(path, **kw))

        return asgi_client
    if kind == "wsgi":
        wsgi_app = WSGIApp()
        wmw = wsgi_auth.AuthMiddleware(wsgi_app, authenticators=authenticators, **options)

        def wsgi_client(path: str, *, raw_path: bytes | None = None, **kw: Any) -> Reply:
            return wsgi_call(wmw, wsgi_app, wsgi_environ(path, **kw))

        return wsgi_client
    raise ValueError(kind)

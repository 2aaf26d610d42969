"""The CORS-preflight exemption (issue 13, item 2).

Only what a browser sends as a preflight passes unauthenticated: the exact method
`OPTIONS` as the server gave it (uvicorn's h11 passes `options` on as sent, and
Starlette's CORSMiddleware answers only `OPTIONS`), with `Origin` and
`Access-Control-Request-Method`, no credential and no body. What it gets back is only a
CORS layer's answer: status and `Access-Control-*`/`Vary` headers, no body; anything
else answering it (the app itself, when no CORS layer sits inside) is replaced by the
401 a request without credentials gets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from starlette.middleware.cors import CORSMiddleware

import asgi_auth
import wsgi_auth
from asgi_auth import APIKeyAuth
from asgi_auth.keys import MemoryKeyStore
from tests.helpers_core import Reply, asgi_call, http_scope, wsgi_call, wsgi_environ
from tests.servers import Server, raw_exchange

ORIGIN = "https://app.example"
PREFLIGHT = [("Origin", ORIGIN), ("Access-Control-Request-Method", "POST")]
SECRET_BODY = b"answered for anyone"


class AnyMethod:
    """An ASGI app that answers every method alike (a mounted app, a catch-all route),
    with a body and a header nobody unauthenticated should see."""

    def __init__(self, cors_headers: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.cors_headers = cors_headers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.calls.append(scope)
        headers = [(b"content-length", str(len(SECRET_BODY)).encode()), (b"x-secret", b"1")]
        if self.cors_headers:
            headers.append((b"access-control-allow-origin", b"*"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": SECRET_BODY})


def with_cors(inner: Any) -> CORSMiddleware:
    return CORSMiddleware(
        inner, allow_origins=[ORIGIN], allow_methods=["GET", "POST"], allow_headers=["X-API-Key"]
    )


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


def raw(method: str, *headers: str) -> bytes:
    lines = [f"{method} /x HTTP/1.1", "Host: 127.0.0.1", *headers, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


RAW_PREFLIGHT = (f"Origin: {ORIGIN}", "Access-Control-Request-Method: POST")


def test_lowercase_options_through_uvicorn_h11(store: MemoryKeyStore) -> None:
    """The reported bypass: h11 passes `options` on; CORSMiddleware does not answer it,
    so the method-agnostic app behind it ran unauthenticated."""
    key = store.create("browser").key
    inner = AnyMethod()
    app = asgi_auth.AuthMiddleware(with_cors(inner), authenticators=[APIKeyAuth(store)])
    with Server(app, http="h11", lifespan="off") as base:
        port = int(base.rsplit(":", 1)[1])

        status, headers, body = raw_exchange(port, raw("options", *RAW_PREFLIGHT))
        assert status == 401
        assert headers["www-authenticate"].startswith("ApiKey ")
        assert SECRET_BODY not in body
        assert inner.calls == []

        # An exact OPTIONS preflight is answered by the CORS layer inside: CORS works.
        status, headers, body = raw_exchange(port, raw("OPTIONS", *RAW_PREFLIGHT))
        assert status == 200
        assert headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in headers["access-control-allow-methods"]
        assert inner.calls == []

        # With a key, lowercase `options` is an ordinary authenticated request; the
        # server really passed it on lowercase.
        status, _, body = raw_exchange(port, raw("options", f"X-API-Key: {key}"))
        assert status == 200
        assert body == SECRET_BODY
        assert [c["method"] for c in inner.calls] == ["options"]


# -- in process: both middlewares ---------------------------------------------------------


class WSGIAnyMethod:
    """The WSGI counterpart of `AnyMethod`; `lazy` apps call start_response only when
    iterated, as generator apps do."""

    def __init__(self, cors_headers: bool = False, lazy: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.closed = 0
        self.cors_headers = cors_headers
        self.lazy = lazy

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        self.calls.append(environ)
        headers = [("Content-Length", str(len(SECRET_BODY))), ("X-Secret", "1")]
        if self.cors_headers:
            headers.append(("Access-Control-Allow-Origin", "*"))
        if not self.lazy:
            start_response("200 OK", headers)
            return [SECRET_BODY]
        return self._lazy(start_response, headers)

    def _lazy(self, start_response: Any, headers: list[tuple[str, str]]) -> Iterator[bytes]:
        try:
            start_response("200 OK", headers)
            yield SECRET_BODY
        finally:
            self.closed += 1


class _Calls:
    """What `asgi_call` reads to tell whether the app ran: the inner app's own record
    when it keeps one (a CORS layer in front of it does not)."""

    def __init__(self, inner: Any) -> None:
        self.calls: list[dict[str, Any]] = getattr(inner, "calls", [])


def asgi(inner: Any, store: MemoryKeyStore, method: str, headers: Any, **opts: Any) -> Reply:
    mw = asgi_auth.AuthMiddleware(inner, authenticators=[APIKeyAuth(store)], **opts)
    scope = http_scope("/x", method=method, headers=headers)
    return asgi_call(mw, _Calls(inner), scope)  # type: ignore[arg-type]


def wsgi(inner: Any, store: MemoryKeyStore, method: str, headers: Any, **opts: Any) -> Reply:
    mw = wsgi_auth.AuthMiddleware(inner, authenticators=[APIKeyAuth(store)], **opts)
    environ = wsgi_environ("/x", method=method, headers=headers)
    for name, value in headers:
        if name.lower() == "content-length":  # a CGI variable, not HTTP_CONTENT_LENGTH
            environ["CONTENT_LENGTH"] = value
    return wsgi_call(mw, inner, environ)


def app_for(kind: str, **kw: Any) -> Any:
    return AnyMethod(**kw) if kind == "asgi" else WSGIAnyMethod(**kw)


CALL = {"asgi": asgi, "wsgi": wsgi}
KINDS = pytest.mark.parametrize("kind", ["asgi", "wsgi"])


@KINDS
@pytest.mark.parametrize("method", ["options", "Options", "OPTIONS "])
def test_only_an_exact_options_is_a_preflight(
    kind: str, method: str, store: MemoryKeyStore
) -> None:
    inner = app_for(kind)
    reply = CALL[kind](inner, store, method, PREFLIGHT)
    assert reply.status == 401
    assert inner.calls == []


@KINDS
def test_a_preflight_the_app_answers_itself_discloses_nothing(
    kind: str, store: MemoryKeyStore, caplog: pytest.LogCaptureFixture
) -> None:
    """No CORS layer inside: the preflight reaches the app (that much cannot be taken
    back, and is documented), but what the app answered does not leave."""
    inner = app_for(kind)
    with caplog.at_level(logging.INFO):
        reply = CALL[kind](inner, store, "OPTIONS", PREFLIGHT)
    assert len(inner.calls) == 1  # the documented limit: see README "CORS"
    assert reply.status == 401
    assert reply.body != SECRET_BODY
    assert "x-secret" not in reply.headers
    assert reply.headers["www-authenticate"].startswith("ApiKey ")
    assert "reason=preflight_not_answered" in caplog.text


@pytest.mark.parametrize(
    ("kind", "lazy"), [("asgi", False), ("wsgi", False), ("wsgi", True)], ids=str
)
def test_a_cors_answer_keeps_its_status_and_cors_headers_only(
    kind: str, lazy: bool, store: MemoryKeyStore
) -> None:
    inner = app_for(kind, cors_headers=True, **({"lazy": True} if lazy else {}))
    reply = CALL[kind](inner, store, "OPTIONS", PREFLIGHT)
    assert reply.status == 200
    assert reply.headers["access-control-allow-origin"] == "*"
    assert reply.body == b""
    assert reply.headers["content-length"] == "0"
    assert "x-secret" not in reply.headers
    if lazy:
        assert inner.closed == 1  # the app's iterable was closed, as PEP 3333 asks


@KINDS
@pytest.mark.parametrize("body_header", [("Content-Length", "5"), ("Transfer-Encoding", "chunked")])
def test_a_preflight_with_a_body_is_not_one(
    kind: str, body_header: tuple[str, str], store: MemoryKeyStore
) -> None:
    inner = app_for(kind, cors_headers=True)
    reply = CALL[kind](inner, store, "OPTIONS", [*PREFLIGHT, body_header])
    assert reply.status == 401
    assert inner.calls == []
    # An empty body declared as such is what some clients send: still a preflight.
    ok = CALL[kind](inner, store, "OPTIONS", [*PREFLIGHT, ("Content-Length", "0")])
    assert ok.status == 200


def test_starlette_cors_inside_answers_and_refuses_origins(store: MemoryKeyStore) -> None:
    inner = AnyMethod()
    ok = asgi(with_cors(inner), store, "OPTIONS", PREFLIGHT)
    assert ok.status == 200
    assert ok.headers["access-control-allow-origin"] == ORIGIN
    other = [("Origin", "https://evil.example"), ("Access-Control-Request-Method", "POST")]
    refused = asgi(with_cors(inner), store, "OPTIONS", other)
    # The CORS layer's own refusal: its status and CORS headers, without its body.
    assert refused.status == 400
    assert "access-control-allow-origin" not in refused.headers
    assert refused.body == b""
    assert inner.calls == []


def test_an_app_that_never_answers_gets_the_401(store: MemoryKeyStore) -> None:
    async def silent(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    reply = asgi(silent, store, "OPTIONS", PREFLIGHT)
    assert reply.status == 401


def test_no_body_reaches_the_app_even_undeclared(store: MemoryKeyStore) -> None:
    """HTTP/2 sends a body as DATA frames, with or without Content-Length: the app behind
    an exempt preflight reads an empty one."""
    read: list[bytes] = []

    async def reader(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        read.append(message["body"])
        headers = [(b"access-control-allow-origin", b"*")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    mw = asgi_auth.AuthMiddleware(reader, authenticators=[APIKeyAuth(store)])
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"payload", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(mw(http_scope("/x", method="OPTIONS", headers=PREFLIGHT), receive, send))
    assert read == [b""]
    assert sent[0]["status"] == 204
    assert b"content-length" not in dict(sent[0]["headers"])  # none on a 204

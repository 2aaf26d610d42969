"""Repeated request headers (issue 13, item 4): linear work, same answers.

ASGI servers hand over every header line; the middleware used to join repeats of the
headers it reads with `found[k] = f"{found[k]}, {v}"`, copying the whole string on each
repeat: 40,000 `Origin` lines cost about a second of event-loop CPU. Now each wanted
header's first and last lines are decoded, once each, and joined once, whatever the
count. That keeps every answer the gate gives: a comma means a repeat (400 for two
credentials), and a forwarded protocol is the rightmost value.

The complexity proof counts work instead of timing it: header values that count their
own decodes, and the length of what the gate is handed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

import asgi_auth
import wsgi_auth
from asgi_auth import APIKeyAuth
from asgi_auth.keys import MemoryKeyStore
from tests.helpers_core import (
    ASGIApp,
    Reply,
    WSGIApp,
    asgi_call,
    http_scope,
    wsgi_call,
    wsgi_environ,
)
from tests.servers import Server, raw_exchange

N = 40_000
PROXY = "203.0.113.7"  # the client address http_scope() and wsgi_environ() give


class Counted(bytes):
    """A header value that counts how often it is decoded."""

    decodes = 0

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        Counted.decodes += 1
        return super().decode(encoding, errors)


@pytest.fixture
def key() -> tuple[MemoryKeyStore, str]:
    store = MemoryKeyStore()
    return store, store.create("reader").key


def asgi(store: MemoryKeyStore, headers: list[tuple[bytes, bytes]], **options: Any) -> Reply:
    app = ASGIApp()
    mw = asgi_auth.AuthMiddleware(
        app, authenticators=[APIKeyAuth(store, scheme="ApiKey")], **options
    )
    scope = http_scope("/x")
    scope["headers"] = headers
    return asgi_call(mw, app, scope)


def wsgi(store: MemoryKeyStore, headers: list[tuple[bytes, bytes]], **options: Any) -> Reply:
    """The environ a WSGI server builds: repeats joined with commas (gunicorn, waitress)."""
    app = WSGIApp()
    mw = wsgi_auth.AuthMiddleware(
        app, authenticators=[APIKeyAuth(store, scheme="ApiKey")], **options
    )
    environ = wsgi_environ("/x")
    joined: dict[str, list[str]] = {}
    for name, value in headers:
        env = "HTTP_" + name.decode().upper().replace("-", "_")
        joined.setdefault(env, []).append(value.decode("latin-1"))
    environ.update({k: ",".join(v) for k, v in joined.items()})
    return wsgi_call(mw, app, environ)


@pytest.mark.parametrize("count", [2, 1_000, N])
def test_repeats_are_decoded_at_most_twice_and_joined_once(
    key: tuple[MemoryKeyStore, str], count: int
) -> None:
    store, api_key = key
    app = ASGIApp()
    mw = asgi_auth.AuthMiddleware(
        app, authenticators=[APIKeyAuth(store)], trusted_proxies=[PROXY], require_https=True
    )
    handed: list[Mapping[str, str]] = []
    extract = mw._extract

    def spy(found: Mapping[str, str], query: str) -> Any:
        handed.append(dict(found))
        return extract(found, query)

    mw._extract = spy  # type: ignore[method-assign]
    headers = [(b"x-api-key", Counted(api_key.encode()))]
    headers += [(b"origin", Counted(b"https://app.example"))] * count
    headers += [(b"x-forwarded-proto", Counted(b"http"))] * (count - 1)
    headers += [(b"x-forwarded-proto", Counted(b"https"))]
    headers += [(b"x-other", Counted(b"not read"))] * count
    Counted.decodes = 0
    scope = http_scope("/x")
    scope["headers"] = headers
    reply = asgi_call(mw, app, scope)
    assert reply.status == 200  # the rightmost proto (https) was believed
    # The same work whatever the count: the key once, the first and the last line of
    # each repeated header (4), nothing else; each other repeat costs a dict lookup and
    # a store. Before: one decode per line (2 * count + 1) and a copy of the whole
    # joined string per repeat.
    assert Counted.decodes == 5
    (found,) = handed
    assert found == {
        "x-api-key": api_key,
        "origin": "https://app.example, https://app.example",
        "x-forwarded-proto": "http, https",
    }


@pytest.mark.parametrize("call", [asgi, wsgi], ids=["asgi", "wsgi"])
@pytest.mark.parametrize("name", [b"x-api-key", b"authorization"])
def test_many_credential_headers_are_400(
    key: tuple[MemoryKeyStore, str], call: Any, name: bytes
) -> None:
    store, api_key = key
    value = api_key.encode() if name == b"x-api-key" else b"ApiKey " + api_key.encode()
    for count in (2, N):  # whatever their total size: a repeat, not an oversized key
        reply = call(store, [(name, value)] * count)
        assert reply.status == 400, count
        assert not reply.reached
        assert reply.json()["error_description"].startswith("more than one")
        assert 'error="invalid_request"' in reply.headers["www-authenticate"]


@pytest.mark.parametrize("call", [asgi, wsgi], ids=["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("name", "insecure", "secure"),
    [
        (b"x-forwarded-proto", b"http", b"https"),
        (b"forwarded", b"for=192.0.2.1;proto=http", b'for="[2001:db8::1]";proto="https"'),
    ],
)
def test_the_rightmost_forwarded_proto_counts(
    key: tuple[MemoryKeyStore, str], call: Any, name: bytes, insecure: bytes, secure: bytes
) -> None:
    store, api_key = key
    opts = {"trusted_proxies": [PROXY], "require_https": True}
    cred = [(b"x-api-key", api_key.encode())]
    ok = call(store, cred + [(name, insecure)] * N + [(name, secure)], **opts)
    assert ok.status == 200
    refused = call(store, cred + [(name, secure)] * N + [(name, insecure)], **opts)
    assert refused.status == 400
    assert refused.json()["error_description"] == "credentials must be sent over HTTPS"


def test_through_uvicorn_with_httptools(key: tuple[MemoryKeyStore, str]) -> None:
    """The server the DoS was found with: httptools passes every line on."""
    store, api_key = key

    async def inner(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = scope["auth"].subject.encode()
        length = str(len(body)).encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
        )
        await send({"type": "http.response.body", "body": body})

    app = asgi_auth.AuthMiddleware(inner, authenticators=[APIKeyAuth(store)])

    def request(*lines: str) -> bytes:
        head = ["GET /x HTTP/1.1", "Host: 127.0.0.1", *lines, "Connection: close", "", ""]
        return "\r\n".join(head).encode("latin-1")

    with Server(app, http="httptools", lifespan="off") as base:
        port = int(base.rsplit(":", 1)[1])
        origins = ["Origin: https://app.example"] * N
        status, _, body = raw_exchange(port, request(f"X-API-Key: {api_key}", *origins))
        assert status == 200
        assert body == store.list()[0].key_id.encode()
        status, headers, body = raw_exchange(port, request(*[f"X-API-Key: {api_key}"] * N))
        assert status == 400
        assert b"more than one" in body
        assert 'error="invalid_request"' in headers["www-authenticate"]

"""WebSocket routes behind AuthMiddleware: accepted with a key, refused before the handshake."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from asgi_auth import APIKeyAuth, AuthMiddleware, Rule
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.base import IssuedKey, KeyStore
from asgi_auth.throttle import Throttle
from tests.helpers_core import altered
from tests.helpers_frameworks import ASGIRecorder, BrokenStore, ws_scope


class EchoApp:
    """A Starlette app with an echo socket that records whether it ever accepted."""

    def __init__(self) -> None:
        self.accepted = 0

        async def echo(websocket: WebSocket) -> None:
            await websocket.accept()
            self.accepted += 1
            await websocket.send_json(
                {
                    "subject": websocket.auth.subject,
                    "user": websocket.user.display_name,
                    "authenticated": websocket.user.is_authenticated,
                }
            )
            async for text in websocket.iter_text():
                await websocket.send_text(text)

        self.app = Starlette(routes=[WebSocketRoute("/ws", echo), WebSocketRoute("/admin", echo)])

    def protected(self, store: KeyStore, **options: Any) -> AuthMiddleware:
        return AuthMiddleware(self.app, authenticators=[APIKeyAuth(store)], **options)


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def issued(store: MemoryKeyStore) -> IssuedKey:
    return store.create("socket-user", ["chat"], subject="alice")


def test_valid_key_is_accepted_and_echoes(store: MemoryKeyStore, issued: IssuedKey) -> None:
    echo = EchoApp()
    with (
        TestClient(echo.protected(store)) as client,
        client.websocket_connect("/ws", headers={"X-API-Key": issued.key}) as ws,
    ):
        assert ws.receive_json() == {
            "subject": "alice",
            "user": "socket-user",
            "authenticated": True,
        }
        for text in ("hello", "second message", "ünïcode"):
            ws.send_text(text)
            assert ws.receive_text() == text
    assert echo.accepted == 1


def test_missing_key_is_an_http_401_with_the_denial_extension(store: MemoryKeyStore) -> None:
    echo = EchoApp()
    with TestClient(echo.protected(store)) as client:
        with pytest.raises(WebSocketDenialResponse) as denied, client.websocket_connect("/ws"):
            pass  # pragma: no cover - the handshake never completes
        resp = denied.value
        assert resp.status_code == 401
        assert resp.json() == {
            "error": "unauthorized",
            "error_description": "authentication required",
        }
        assert resp.headers["www-authenticate"].startswith("ApiKey ")
        assert resp.headers["content-type"] == "application/json"

        with (
            pytest.raises(WebSocketDenialResponse) as bad,
            client.websocket_connect("/ws", headers={"X-API-Key": "agk_bogus"}),
        ):
            pass  # pragma: no cover
        assert bad.value.status_code == 401
        assert bad.value.json()["error"] == "invalid_token"
    assert echo.accepted == 0


def test_missing_scope_is_an_http_403(store: MemoryKeyStore, issued: IssuedKey) -> None:
    echo = EchoApp()
    app = echo.protected(store, rules=[Rule("/admin", scopes=["admin"])])
    with TestClient(app) as client:
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect("/admin", headers={"X-API-Key": issued.key}),
        ):
            pass  # pragma: no cover
        assert denied.value.status_code == 403
        assert 'scope="admin"' in denied.value.headers["www-authenticate"]
    assert echo.accepted == 0


def _direct(app: AuthMiddleware, scope: dict[str, Any]) -> list[dict[str, Any]]:
    rec = ASGIRecorder([{"type": "websocket.connect"}])
    asyncio.run(app(scope, rec.receive, rec.send))
    return rec.sent


@pytest.mark.parametrize("extensions", [None, {}, {"websocket.http.response.other": {}}])
def test_missing_key_closes_with_1008_without_the_extension(
    store: MemoryKeyStore, extensions: dict[str, Any] | None
) -> None:
    echo = EchoApp()
    sent = _direct(echo.protected(store), ws_scope(extensions=extensions))
    assert len(sent) == 1
    (close,) = sent
    assert close["type"] == "websocket.close"
    assert close["code"] == 1008
    reason = close.get("reason", "")
    assert reason.isascii()
    assert len(reason.encode()) <= 123  # a close frame's payload is 125 bytes, 2 for the code
    assert echo.accepted == 0


def test_bad_key_and_missing_scope_close_with_1008(
    store: MemoryKeyStore, issued: IssuedKey
) -> None:
    echo = EchoApp()
    app = echo.protected(store, rules=[Rule("/admin", scopes=["admin"])])
    bad = _direct(app, ws_scope(headers=[(b"x-api-key", b"agk_bogus")]))
    assert [(m["type"], m["code"]) for m in bad] == [("websocket.close", 1008)]
    scope = _direct(app, ws_scope("/admin", headers=[(b"x-api-key", issued.key.encode())]))
    assert [(m["type"], m["code"]) for m in scope] == [("websocket.close", 1008)]
    assert echo.accepted == 0


def test_valid_key_direct_call_reaches_the_app(store: MemoryKeyStore, issued: IssuedKey) -> None:
    echo = EchoApp()
    rec = ASGIRecorder(
        [
            {"type": "websocket.connect"},
            {"type": "websocket.receive", "text": "ping"},
            {"type": "websocket.disconnect", "code": 1000},
        ]
    )
    scope = ws_scope(headers=[(b"x-api-key", issued.key.encode())])
    asyncio.run(echo.protected(store)(scope, rec.receive, rec.send))
    assert rec.sent[0]["type"] == "websocket.accept"
    assert rec.sent[-1] == {"type": "websocket.send", "text": "ping"}
    assert echo.accepted == 1


def test_key_store_down_closes_with_1013() -> None:
    broken = BrokenStore()
    issued = broken.create("k", ["chat"])  # well formed; the store cannot look it up
    echo = EchoApp()
    sent = _direct(echo.protected(broken), ws_scope(headers=[(b"x-api-key", issued.key.encode())]))
    assert [(m["type"], m["code"]) for m in sent] == [("websocket.close", 1013)]
    assert echo.accepted == 0


def test_key_store_down_is_a_503_with_the_denial_extension() -> None:
    broken = BrokenStore()
    issued = broken.create("k", ["chat"])
    echo = EchoApp()
    with TestClient(echo.protected(broken)) as client:
        with (
            pytest.raises(WebSocketDenialResponse) as denied,
            client.websocket_connect("/ws", headers={"X-API-Key": issued.key}),
        ):
            pass  # pragma: no cover
        assert denied.value.status_code == 503
        assert "retry-after" in denied.value.headers
        assert denied.value.json()["error"] == "temporarily_unavailable"
    assert echo.accepted == 0


def test_client_gone_before_connect_sends_nothing(store: MemoryKeyStore) -> None:
    echo = EchoApp()
    rec = ASGIRecorder([{"type": "websocket.disconnect", "code": 1001}])
    asyncio.run(echo.protected(store)(ws_scope(), rec.receive, rec.send))
    assert rec.sent == []
    assert echo.accepted == 0


# -- failed-credential throttling ------------------------------------------------------------

HOUR = 3600
TOO_MANY = {
    "error": "too_many_requests",
    "error_description": "too many failed credentials; retry later",
}


def _throttled_echo(store: KeyStore, limit: int) -> tuple[EchoApp, AuthMiddleware]:
    """The echo sockets plus an HTTP route, behind one middleware with one throttle."""
    echo = EchoApp()

    async def items(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.auth.subject)

    echo.app.router.routes.append(Route("/items", items))
    throttle = Throttle(f"{limit}/{HOUR} seconds", per="address")
    return echo, echo.protected(store, throttle=throttle)


def _denied(client: TestClient, key: str) -> WebSocketDenialResponse:
    with (
        pytest.raises(WebSocketDenialResponse) as denied,
        client.websocket_connect("/ws", headers={"X-API-Key": key}),
    ):
        pass  # pragma: no cover - the handshake never completes
    return denied.value


def test_websocket_failures_count_with_http_ones_and_the_handshake_gets_429(
    store: MemoryKeyStore, issued: IssuedKey
) -> None:
    unverified = store.create("late", ["chat"], subject="bob").key
    bad = altered(store.create("target", ["chat"]).key)
    echo, app = _throttled_echo(store, limit=3)
    with TestClient(app) as client:  # every request from the one address "testclient"
        with client.websocket_connect("/ws", headers={"X-API-Key": issued.key}) as ws:
            assert ws.receive_json()["subject"] == "alice"  # verified before the attack
        # Three failures in all, sockets and HTTP mixed.
        assert _denied(client, bad).status_code == 401
        assert client.get("/items", headers={"X-API-Key": bad}).status_code == 401
        assert _denied(client, bad).status_code == 401

        # Over the limit: the handshake is refused with the HTTP 429 (denial extension).
        for key in (bad, unverified):  # a valid key not verified yet is refused too
            refused = _denied(client, key)
            assert refused.status_code == 429
            assert 1 <= int(refused.headers["retry-after"]) <= HOUR
            assert "www-authenticate" not in refused.headers
            assert refused.json() == TOO_MANY
        over_http = client.get("/items", headers={"X-API-Key": bad})
        assert over_http.status_code == 429
        assert over_http.json() == TOO_MANY
        # A key verified already is no guess: its socket still opens.
        with client.websocket_connect("/ws", headers={"X-API-Key": issued.key}) as ws:
            assert ws.receive_json()["subject"] == "alice"
    assert echo.accepted == 2


def test_websocket_over_the_limit_without_the_extension_closes_with_1008(
    store: MemoryKeyStore,
) -> None:
    unverified = store.create("late", ["chat"], subject="bob").key
    bad = altered(store.create("target", ["chat"]).key)
    echo, app = _throttled_echo(store, limit=2)

    def connect(key: str, client: str = "192.0.2.1") -> list[dict[str, Any]]:
        scope = ws_scope(headers=[(b"x-api-key", key.encode())])
        scope["client"] = (client, 50000)
        return _direct(app, scope)

    for _ in range(2):
        assert [(m["type"], m["code"]) for m in connect(bad)] == [("websocket.close", 1008)]
    for key in (bad, unverified):
        (close,) = connect(key)
        assert close == {
            "type": "websocket.close",
            "code": 1008,
            "reason": TOO_MANY["error_description"],
        }
    # Another address is not throttled: the same valid key is accepted from there.
    assert connect(unverified, client="192.0.2.2")[0]["type"] == "websocket.accept"
    assert echo.accepted == 1

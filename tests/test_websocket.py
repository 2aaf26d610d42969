"""WebSocket routes behind AuthMiddleware: accepted with a key, refused before the handshake."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient, WebSocketDenialResponse
from starlette.websockets import WebSocket

from asgi_auth import APIKeyAuth, AuthMiddleware, Rule
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.base import IssuedKey, KeyStore
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

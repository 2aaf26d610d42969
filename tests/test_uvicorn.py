"""A real uvicorn server on 127.0.0.1, a FastAPI app, an SQLite key store, real HTTP."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import uvicorn
from fastapi import FastAPI
from starlette.requests import Request

from asgi_auth import APIKeyAuth, AuthMiddleware, Rule
from asgi_auth.keys import SQLiteKeyStore

HOST = "127.0.0.1"


@dataclass
class Served:
    base_url: str
    port: int
    reader: str
    admin: str


def make_app(store: SQLiteKeyStore) -> FastAPI:
    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/admin")
    async def admin(request: Request) -> dict[str, str]:
        return {"admin": request.user.display_name}

    @app.get("/items")
    async def items(request: Request) -> dict[str, str]:
        return {"subject": request.auth.subject, "client": request.client.host}

    app.add_middleware(
        AuthMiddleware,
        authenticators=[APIKeyAuth(store, scheme="ApiKey")],
        public_paths=["/health"],
        rules=[Rule("/admin", scopes=["admin"])],
    )
    return app


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    db: Path = tmp_path_factory.mktemp("uvicorn") / "keys.db"
    store = SQLiteKeyStore(db)
    reader = store.create("reader", ["items:read"], subject="alice").key
    admin = store.create("root", ["admin", "items:read"], subject="root").key

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        make_app(SQLiteKeyStore(db)),
        host=HOST,
        port=port,
        log_level="warning",
        lifespan="on",
        access_log=False,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        started = threading.Event()
        for _ in range(500):  # bounded readiness poll (up to ~10 s), not a timing assertion
            if server.started or not thread.is_alive():
                break
            started.wait(0.02)
        assert server.started, "uvicorn did not start"
        yield Served(f"http://{HOST}:{port}", port, reader, admin)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
    assert not thread.is_alive()


@pytest.fixture
def client(served: Served) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=served.base_url, timeout=10) as c:
        yield c


def raw_request(port: int, request: bytes) -> tuple[int, bytes]:
    """Send bytes as they are (no client-side normalisation); return status and body."""
    with socket.create_connection((HOST, port), timeout=10) as conn:
        conn.sendall(request)
        data = b""
        for _ in range(1000):  # bounded read until the server closes
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, body


def get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}", *extra, "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


def test_key_gets_200(client: httpx2.Client, served: Served) -> None:
    resp = client.get("/items", headers={"X-API-Key": served.reader})
    assert resp.status_code == 200
    assert resp.json() == {"subject": "alice", "client": HOST}


def test_no_key_gets_401(client: httpx2.Client) -> None:
    resp = client.get("/items")
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("ApiKey ")
    assert resp.json()["error"] == "unauthorized"
    bad = client.get("/items", headers={"X-API-Key": "agk_bogus"})
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_token"


def test_missing_scope_gets_403(client: httpx2.Client, served: Served) -> None:
    resp = client.get("/admin", headers={"X-API-Key": served.reader})
    assert resp.status_code == 403
    assert 'scope="admin"' in resp.headers["www-authenticate"]
    ok = client.get("/admin", headers={"X-API-Key": served.admin})
    assert ok.json() == {"admin": "root"}


def test_public_health(client: httpx2.Client) -> None:
    resp = client.get("/health")
    assert resp.status_code == 200
    assert resp.json() == {"ok": True}


def test_many_requests_over_one_connection(client: httpx2.Client, served: Served) -> None:
    for _ in range(10):
        assert client.get("/items", headers={"X-API-Key": served.reader}).status_code == 200
        assert client.get("/items").status_code == 401


@pytest.mark.parametrize(
    "path", ["/health/../admin", "//admin", "/health/%2e%2e/admin", "/admin;/health"]
)
def test_non_canonical_paths_stay_protected(served: Served, path: str) -> None:
    status, body = raw_request(served.port, get(path))
    assert status == 401, body
    assert b"unauthorized" in body


def test_raw_socket_with_key_reaches_the_app(served: Served) -> None:
    status, body = raw_request(served.port, get("/items", f"X-API-Key: {served.reader}"))
    assert status == 200
    assert b'"subject":"alice"' in body
    status, _ = raw_request(served.port, get("/health"))
    assert status == 200


def test_two_api_key_headers_are_a_400(served: Served) -> None:
    request = get("/items", f"X-API-Key: {served.reader}", f"X-API-Key: {served.admin}")
    status, body = raw_request(served.port, request)
    assert status == 400
    assert b"invalid_request" in body
    # Even the same key twice is ambiguous.
    request = get("/items", f"X-API-Key: {served.reader}", f"X-API-Key: {served.reader}")
    assert raw_request(served.port, request)[0] == 400


def test_authorization_header_and_two_of_them(served: Served, client: httpx2.Client) -> None:
    ok = client.get("/items", headers={"Authorization": f"ApiKey {served.reader}"})
    assert ok.status_code == 200
    request = get(
        "/items", f"Authorization: ApiKey {served.reader}", f"Authorization: ApiKey {served.admin}"
    )
    status, body = raw_request(served.port, request)
    assert status == 400
    assert b"invalid_request" in body

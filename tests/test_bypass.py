"""Public-path bypass attempts, sent raw to both middlewares.

The ASGI middleware gets a hand-built scope (`path` and `raw_path` exactly as a server
would produce them from what a raw client sent); the WSGI middleware gets `PATH_INFO`
the same way. Nothing normalises the path on the way, as a test client would.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from asgi_auth import ANONYMOUS, APIKeyAuth, Rule
from asgi_auth.keys import MemoryKeyStore
from tests.helpers_core import Client, make_client


@dataclass(frozen=True)
class Attempt:
    path: str  # `scope["path"]` / `PATH_INFO`: what the server hands over
    raw_path: bytes | None = None  # ASGI only: the bytes on the request line
    query: str = ""
    reaches_admin: bool = True  # some reading of it is the /admin route

    def __str__(self) -> str:
        return f"{self.path!r}?{self.query}" if self.query else repr(self.path)


ATTEMPTS = [
    Attempt("/health/../admin"),
    # `/health%2F..%2Fadmin` on the wire: decoded by the server, or handed over verbatim.
    Attempt("/health/../admin", raw_path=b"/health%2F..%2Fadmin"),
    Attempt("/health%2F..%2Fadmin", raw_path=b"/health%2F..%2Fadmin"),
    Attempt("/health/..%2Fadmin", raw_path=b"/health/..%2Fadmin"),
    Attempt("//admin"),
    Attempt("/admin;/health"),
    Attempt("/health;/../admin"),
    Attempt("/health/..;/admin"),
    Attempt("/admin", query="x=/health"),
    Attempt("/admin", query="next=%2Fhealth&health"),
    Attempt("/admin#/health", raw_path=b"/admin%23/health"),
    Attempt("/health/./../admin"),
    Attempt("/health\\..\\admin"),
    Attempt("/health/..\\admin"),
    Attempt("/%2e%2e/admin", raw_path=b"/%2e%2e/admin"),
    Attempt("/../admin", raw_path=b"/%2e%2e/admin"),
    Attempt("/health/%2e%2e/admin", raw_path=b"/health/%2e%2e/admin"),
    Attempt("/health/%2E%2E/admin", raw_path=b"/health/%2E%2E/admin"),
    Attempt("/health/.%2e/admin", raw_path=b"/health/.%2e/admin"),
    Attempt("/./admin"),
    Attempt("/admin/"),
    Attempt("/admin/../admin/users"),
    # Not the admin route under any reading, but not /health either: still protected.
    Attempt("/HEALTH", reaches_admin=False),
    Attempt("/Health/live", reaches_admin=False),
    Attempt("/healthz", reaches_admin=False),
    Attempt("/health-check", reaches_admin=False),
    Attempt("/healthz/../health/../admin/..", reaches_admin=False),
]


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def client(kind: str, store: MemoryKeyStore) -> Client:
    return make_client(
        kind,
        [APIKeyAuth(store)],
        public_paths=["/health"],
        rules=[Rule("/admin", scopes=["admin"])],
    )


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=str)
def test_bypass_attempt_without_key_is_401(client: Client, attempt: Attempt) -> None:
    reply = client(attempt.path, raw_path=attempt.raw_path, query=attempt.query)
    assert reply.status == 401
    assert not reply.reached
    assert reply.json()["error"] == "unauthorized"
    assert reply.headers["www-authenticate"].startswith("ApiKey ")


@pytest.mark.parametrize("attempt", ATTEMPTS, ids=str)
def test_bypass_attempt_with_non_admin_key(
    client: Client, store: MemoryKeyStore, attempt: Attempt
) -> None:
    reader = store.create("reader", scopes=["read"]).key
    reply = client(
        attempt.path,
        raw_path=attempt.raw_path,
        query=attempt.query,
        headers=[("X-API-Key", reader)],
    )
    if attempt.reaches_admin:
        # Any path that some server or router could read as /admin needs the admin scope.
        assert reply.status == 403
        assert not reply.reached
        assert reply.json() == {
            "error": "insufficient_scope",
            "error_description": reply.json()["error_description"],
            "scope": "admin",
        }
        assert 'error="insufficient_scope"' in reply.headers["www-authenticate"]
        assert 'scope="admin"' in reply.headers["www-authenticate"]
    else:
        # A protected path: the key is enough, the app sees who called.
        assert reply.status == 200
        assert reply.reached
        assert reply.identity is not None
        assert reply.identity.scopes == frozenset({"read"})


@pytest.mark.parametrize("attempt", [a for a in ATTEMPTS if a.reaches_admin], ids=str)
def test_bypass_attempt_with_admin_key_reaches_app(
    client: Client, store: MemoryKeyStore, attempt: Attempt
) -> None:
    admin = store.create("admin", scopes=["admin"]).key
    reply = client(
        attempt.path,
        raw_path=attempt.raw_path,
        query=attempt.query,
        headers=[("X-API-Key", admin)],
    )
    assert reply.status == 200
    assert reply.reached
    assert reply.identity is not None
    assert reply.identity.scopes == frozenset({"admin"})


@pytest.mark.parametrize(
    "attempt",
    [
        Attempt("/health"),
        Attempt("/health/"),
        Attempt("/health/live"),
        Attempt("/health/live/", raw_path=b"/health/live/"),
        Attempt("/health", query="x=/admin"),
        Attempt("/health/./live"),
        Attempt("/health/ready/../live"),
    ],
    ids=str,
)
def test_public_paths_reach_the_app_without_a_key(client: Client, attempt: Attempt) -> None:
    reply = client(attempt.path, raw_path=attempt.raw_path, query=attempt.query)
    assert reply.status == 200
    assert reply.reached
    assert reply.identity is ANONYMOUS
    assert reply.body == b"ok"


@pytest.mark.parametrize("path", ["/HEALTH", "/Health/Live", "/health"])
def test_case_insensitive_public_paths(kind: str, store: MemoryKeyStore, path: str) -> None:
    client = make_client(
        kind,
        [APIKeyAuth(store)],
        public_paths=["/health"],
        rules=[Rule("/admin", scopes=["admin"])],
        case_sensitive_paths=False,
    )
    reply = client(path)
    assert reply.status == 200
    assert reply.reached


@pytest.mark.parametrize(
    "attempt",
    [
        Attempt("/HEALTH/../ADMIN"),
        Attempt("/ADMIN;/health"),
        Attempt("/Health%2F..%2FAdmin", raw_path=b"/Health%2F..%2FAdmin"),
        Attempt("//Admin"),
    ],
    ids=str,
)
def test_case_insensitive_rules_still_guard_admin(
    kind: str, store: MemoryKeyStore, attempt: Attempt
) -> None:
    client = make_client(
        kind,
        [APIKeyAuth(store)],
        public_paths=["/health"],
        rules=[Rule("/admin", scopes=["admin"])],
        case_sensitive_paths=False,
    )
    assert client(attempt.path, raw_path=attempt.raw_path).status == 401
    reader = store.create("reader", scopes=["read"]).key
    reply = client(attempt.path, raw_path=attempt.raw_path, headers=[("X-API-Key", reader)])
    assert reply.status == 403
    assert not reply.reached

"""Whatever a client sends, each middleware answers with the exact status (never a 500)
and the app is not reached on failure. Run raw against ASGI and WSGI, then through real
framework test clients (Starlette, Flask)."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from flask import Flask
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

import asgi_auth
import wsgi_auth
from asgi_auth import APIKeyAuth
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.keys.format import assemble, new_secret, parse
from tests.helpers_core import Client, FailingStore, Header, Reply, make_client

CHALLENGE = re.compile(r'([A-Za-z][\w-]*)="([^"]*)"')


def parse_challenge(value: str) -> tuple[str, dict[str, str]]:
    """`ApiKey realm="api", error="x"` -> ("ApiKey", {"realm": "api", "error": "x"})."""
    scheme, _, rest = value.partition(" ")
    params = dict(CHALLENGE.findall(rest))
    # Every parameter is a quoted-string, separated by ", " (RFC 7235 §2.1).
    assert rest == ", ".join(f'{k}="{v}"' for k, v in params.items())
    return scheme, params


@dataclass
class Keys:
    good: str
    revoked: str
    expired: str
    foreign: str  # well-formed, valid checksum, id unknown to this store
    wrong_secret: str  # a real id, another secret, valid checksum
    wrong_checksum: str


def make_keys(store: MemoryKeyStore) -> Keys:
    good = store.create("good", scopes=["read"]).key
    revoked = store.create("revoked").key
    store.revoke(parse(revoked)[1])
    expired = store.create("expired", expires_at=time.time() - 60).key
    foreign = MemoryKeyStore().create("elsewhere").key
    prefix, key_id, _ = parse(good)
    wrong_secret = assemble(prefix, key_id, new_secret())
    wrong_checksum = good[:-1] + ("A" if good[-1] != "A" else "B")
    return Keys(good, revoked, expired, foreign, wrong_secret, wrong_checksum)


@dataclass(frozen=True)
class Case:
    name: str
    request: Callable[[Keys], dict[str, Any]]
    status: int
    error: str | None  # the `error=` challenge parameter; None for a bare challenge
    description: str | None = None

    def __str__(self) -> str:
        return self.name


def hdr(*headers: Header) -> dict[str, Any]:
    return {"headers": list(headers)}


CASES = [
    Case("missing", lambda k: {}, 401, None, "authentication required"),
    Case("empty", lambda k: hdr(("X-API-Key", "")), 400, "invalid_request"),
    Case("blank", lambda k: hdr(("X-API-Key", "   ")), 400, "invalid_request"),
    # Impossibly long: an invalid credential (invalid_token), refused before any parsing.
    Case(
        "100KB",
        lambda k: hdr(("X-API-Key", "a" * 100_000)),
        401,
        "invalid_token",
        "x-api-key header too large",
    ),
    Case(
        "at-limit",
        lambda k: hdr(("X-API-Key", "a" * 8192)),
        401,
        "invalid_token",
        "API key has no prefix",
    ),
    Case(
        "just-over-limit",
        lambda k: hdr(("X-API-Key", "a" * 8193)),
        401,
        "invalid_token",
        "x-api-key header too large",
    ),
    Case(
        "utf8",
        lambda k: hdr(("X-API-Key", (k.good[:-1] + "é").encode())),
        400,
        "invalid_request",
    ),
    Case("not-utf8", lambda k: hdr(("X-API-Key", b"agk_\xff\xfe\xc3(")), 400, "invalid_request"),
    Case("control-char", lambda k: hdr(("X-API-Key", b"agk_ab\x01cd")), 400, "invalid_request"),
    Case(
        "two-x-api-key",
        lambda k: hdr(("X-API-Key", k.good), ("X-API-Key", k.good)),
        400,
        "invalid_request",
    ),
    Case(
        "two-x-api-key-one-empty",
        lambda k: hdr(("X-API-Key", k.good), ("X-API-Key", "")),
        400,
        "invalid_request",
    ),
    Case(
        "x-api-key-and-authorization",
        lambda k: hdr(("X-API-Key", k.good), ("Authorization", f"ApiKey {k.good}")),
        400,
        "invalid_request",
        "more than one credential",
    ),
    Case(
        "two-authorization",
        lambda k: hdr(("Authorization", f"ApiKey {k.good}"), ("Authorization", f"ApiKey {k.good}")),
        400,
        "invalid_request",
    ),
    Case(
        "authorization-no-token", lambda k: hdr(("Authorization", "ApiKey")), 400, "invalid_request"
    ),
    Case(
        "authorization-two-tokens",
        lambda k: hdr(("Authorization", f"ApiKey {k.good} {k.good}")),
        400,
        "invalid_request",
    ),
    Case(
        "wrong-checksum",
        lambda k: hdr(("X-API-Key", k.wrong_checksum)),
        401,
        "invalid_token",
        "API key checksum does not match",
    ),
    Case("malformed", lambda k: hdr(("X-API-Key", "agk_short")), 401, "invalid_token"),
    Case("no-prefix", lambda k: hdr(("X-API-Key", "hunter2")), 401, "invalid_token"),
    Case(
        "wrong-prefix",
        lambda k: hdr(("X-API-Key", "zzz" + k.good[3:])),
        401,
        "invalid_token",
        "API key has an unknown prefix",
    ),
    Case(
        "unknown-id",
        lambda k: hdr(("X-API-Key", k.foreign)),
        401,
        "invalid_token",
        "unknown API key",
    ),
    Case(
        "wrong-secret",
        lambda k: hdr(("X-API-Key", k.wrong_secret)),
        401,
        "invalid_token",
        "invalid API key",
    ),
    Case(
        "revoked",
        lambda k: hdr(("X-API-Key", k.revoked)),
        401,
        "invalid_token",
        "API key revoked",
    ),
    Case(
        "expired",
        lambda k: hdr(("X-API-Key", k.expired)),
        401,
        "invalid_token",
        "API key expired",
    ),
    Case(
        "query-api_key",
        lambda k: {"query": f"api_key={k.good}"},
        400,
        "invalid_request",
        "credentials in the query string are not accepted",
    ),
    Case("query-access_token", lambda k: {"query": "access_token=abc"}, 400, "invalid_request"),
    Case("basic", lambda k: hdr(("Authorization", "Basic xyz")), 401, None),
    Case("bearer-unconfigured", lambda k: hdr(("Authorization", "Bearer abc")), 401, None),
    Case(
        "authorization-garbage", lambda k: hdr(("Authorization", "garbage")), 400, "invalid_request"
    ),
    Case("authorization-empty", lambda k: hdr(("Authorization", "")), 400, "invalid_request"),
]


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def store() -> MemoryKeyStore:
    return MemoryKeyStore()


@pytest.fixture
def keys(store: MemoryKeyStore) -> Keys:
    return make_keys(store)


@pytest.fixture
def client(kind: str, store: MemoryKeyStore) -> Client:
    # Header and `Authorization: ApiKey` both on: the cases cover each and both together.
    return make_client(kind, [APIKeyAuth(store, scheme="ApiKey")])


def assert_denied(reply: Reply, case: Case) -> None:
    assert reply.status == case.status, reply.body
    assert not reply.reached
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["cache-control"] == "no-store"
    assert int(reply.headers["content-length"]) == len(reply.body)
    body = reply.json()
    assert set(body) == {"error", "error_description"}
    assert body["error"] == (case.error or "unauthorized")
    if case.description is not None:
        assert body["error_description"] == case.description
    # Exactly one challenge header, in RFC 6750 form.
    assert [k for k, _ in reply.raw_headers if k.lower() == "www-authenticate"] == [
        "www-authenticate" if reply.raw_headers[0][0].islower() else "WWW-Authenticate"
    ]
    scheme, params = parse_challenge(reply.headers["www-authenticate"])
    assert scheme == "ApiKey"
    assert params["realm"] == "api"
    assert params["header"] == "X-API-Key"
    if case.error is None:
        # RFC 6750 §3.1: no authentication information -> no error code at all.
        assert "error" not in params
        assert "error_description" not in params
    else:
        assert params["error"] == case.error
        assert params["error_description"] == body["error_description"]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_bad_input(client: Client, keys: Keys, case: Case) -> None:
    assert_denied(client("/items", **case.request(keys)), case)


def test_good_key_reaches_app(client: Client, keys: Keys) -> None:
    for headers in ([("X-API-Key", keys.good)], [("Authorization", f"ApiKey {keys.good}")]):
        reply = client("/items", headers=headers)
        assert reply.status == 200
        assert reply.reached
        assert reply.identity is not None
        assert reply.identity.scopes == frozenset({"read"})
        assert reply.identity.method == "api_key"


@pytest.mark.parametrize("scheme", ["ApiKey", "apikey", "APIKEY"])
def test_authorization_scheme_is_case_insensitive(
    kind: str, store: MemoryKeyStore, keys: Keys, scheme: str
) -> None:
    client = make_client(kind, [APIKeyAuth(store, header=None, scheme="ApiKey")])
    assert client("/x", headers=[("Authorization", f"{scheme} {keys.good}")]).status == 200


def test_query_key_works_when_enabled(kind: str, store: MemoryKeyStore, keys: Keys) -> None:
    client = make_client(kind, [APIKeyAuth(store, query_param="api_key")])
    reply = client("/items", query=f"page=2&api_key={keys.good}")
    assert reply.status == 200
    assert reply.reached
    # Still one credential only, and the other credential names stay refused.
    assert client("/items", query=f"api_key={keys.good}&api_key={keys.good}").status == 400
    assert client("/items", query=f"api_key={keys.good}&access_token=x").status == 400
    bad = client("/items", query=f"api_key={keys.wrong_secret}")
    assert bad.status == 401
    assert not bad.reached


def test_query_credential_is_refused_even_beside_a_header(client: Client, keys: Keys) -> None:
    # RFC 6750 §3.1: more than one method is invalid_request; and the query never decides.
    for query, header in ((keys.good, keys.wrong_secret), (keys.wrong_secret, keys.good)):
        reply = client("/items", query=f"api_key={query}", headers=[("X-API-Key", header)])
        assert reply.status == 400
        assert not reply.reached
    # A query that merely mentions nothing credential-like is never parsed for one.
    ok = client("/items", query="page=2&sort=name", headers=[("X-API-Key", keys.good)])
    assert ok.status == 200


def test_query_key_and_header_both_is_400_when_enabled(
    kind: str, store: MemoryKeyStore, keys: Keys
) -> None:
    client = make_client(kind, [APIKeyAuth(store, query_param="api_key")])
    reply = client("/items", query=f"api_key={keys.good}", headers=[("X-API-Key", keys.good)])
    assert reply.status == 400
    assert not reply.reached
    assert reply.json()["error_description"] == "more than one credential"


def test_header_less_authenticator_has_no_header_param(kind: str, store: MemoryKeyStore) -> None:
    client = make_client(kind, [APIKeyAuth(store, header=None, scheme="ApiKey")])
    reply = client("/x")
    assert reply.status == 401
    assert reply.headers["www-authenticate"] == 'ApiKey realm="api"'
    # An X-API-Key header is not read at all by this configuration.
    reply = client("/x", headers=[("X-API-Key", "agk_whatever")])
    assert reply.status == 401
    assert "error" not in parse_challenge(reply.headers["www-authenticate"])[1]


@pytest.mark.parametrize("error", [ConnectionError("down"), TimeoutError(), RuntimeError("boom")])
def test_store_failure_is_503_with_retry_after(kind: str, error: Exception) -> None:
    store = FailingStore(error)
    key = store.create("k").key
    client = make_client(kind, [APIKeyAuth(store)])
    for _ in range(2):  # a failure is not remembered as "unknown key"
        reply = client("/items", headers=[("X-API-Key", key)])
        assert reply.status == 503
        assert not reply.reached
        assert reply.headers["retry-after"] == "5"
        assert "www-authenticate" not in reply.headers
        assert reply.json() == {
            "error": "temporarily_unavailable",
            "error_description": "API key store unavailable",
        }
    assert store.calls == 2


def test_store_is_not_asked_for_garbage(kind: str) -> None:
    store = FailingStore()
    client = make_client(kind, [APIKeyAuth(store)])
    # The format and checksum are checked before any lookup: a down store is never asked.
    assert client("/x", headers=[("X-API-Key", "agk_" + "A" * 50)]).status == 401
    assert store.calls == 0


# -- through real framework test clients --------------------------------------------------

FRAMEWORK_CASES = [
    c
    for c in CASES
    if c.name
    in {
        "missing",
        "empty",
        "100KB",
        "two-x-api-key",
        "x-api-key-and-authorization",
        "wrong-checksum",
        "unknown-id",
        "wrong-secret",
        "revoked",
        "expired",
        "query-api_key",
        "basic",
        "authorization-garbage",
    }
]


@dataclass
class Framework:
    get: Callable[..., tuple[int, dict[str, str], bytes]]
    reached: list[Any]


@pytest.fixture(params=["starlette", "flask"])
def framework(request: pytest.FixtureRequest, store: MemoryKeyStore) -> Iterator[Framework]:
    reached: list[Any] = []
    auth = APIKeyAuth(store, scheme="ApiKey")
    if request.param == "starlette":

        async def items(req: Request) -> JSONResponse:
            reached.append(req.scope["auth"])
            return JSONResponse({"subject": req.user.display_name})

        app = Starlette(routes=[Route("/items", items)])
        app.add_middleware(asgi_auth.AuthMiddleware, authenticators=[auth])
        with TestClient(app) as tc:

            def sget(path: str, **kw: Any) -> tuple[int, dict[str, str], bytes]:
                r = tc.get(path, **kw)
                return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content

            yield Framework(sget, reached)
    else:
        flask_app = Flask(__name__)

        @flask_app.get("/items")
        def flask_items() -> dict[str, str]:
            reached.append(flask_request.environ[wsgi_auth.IDENTITY_KEY])
            return {"subject": flask_request.environ[wsgi_auth.IDENTITY_KEY].subject}

        flask_app.wsgi_app = wsgi_auth.AuthMiddleware(  # type: ignore[method-assign]
            flask_app.wsgi_app, authenticators=[auth]
        )
        fc = flask_app.test_client()

        def fget(path: str, *, headers: Any = (), params: Any = None) -> Any:
            r = fc.get(path, headers=list(headers), query_string=params)
            return r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.data

        yield Framework(fget, reached)


@pytest.mark.parametrize("case", FRAMEWORK_CASES, ids=str)
def test_bad_input_through_framework(framework: Framework, keys: Keys, case: Case) -> None:
    req = case.request(keys)
    headers = [(k, v.decode() if isinstance(v, bytes) else v) for k, v in req.get("headers", [])]
    params = dict([req["query"].split("=", 1)]) if "query" in req else None
    status, resp_headers, body = framework.get("/items", headers=headers, params=params)
    reply = Reply(
        status, resp_headers, body, bool(framework.reached), None, list(resp_headers.items())
    )
    assert_denied(reply, case)


def test_good_key_through_framework(framework: Framework, keys: Keys) -> None:
    status, _, body = framework.get("/items", headers=[("X-API-Key", keys.good)])
    assert status == 200
    assert b'"subject"' in body
    assert [i.name for i in framework.reached] == ["good"]

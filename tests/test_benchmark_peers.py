"""The peer benchmark cases really authenticate: each answers 200 to the credential it is
benchmarked with and refuses the same request without it or with it tampered, so no case
measures a no-op. No timing is asserted."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from benchmarks import apps, peer_cases
from benchmarks.cases import Fixture
from benchmarks.harness import BARE, ASGIRunner, Case, WSGIRunner, align_modes

GROUPS = (
    peer_cases.starlette_peer_cases,
    peer_cases.fastapi_peer_cases,
    peer_cases.flask_peer_cases,
)
CREDENTIAL_HEADERS = {b"authorization", b"x-api-key"}
CREDENTIAL_ENVIRON = {"HTTP_AUTHORIZATION", "HTTP_X_API_KEY"}
REFUSED = {401, 403, 422}


@pytest.fixture(scope="module")
def fx() -> Iterator[Fixture]:
    fixture = Fixture()
    yield fixture
    fixture.close()


@pytest.fixture(scope="module")
def cases(fx: Fixture) -> Iterator[dict[tuple[str, str], Case]]:
    built = [c for make in GROUPS for c in make(fx)]
    yield {(c.kind, c.name): c for c in built if c.name != BARE}
    close(built)


def close(cases: list[Case]) -> None:
    for c in cases:
        if isinstance(c.runner, ASGIRunner):
            c.runner.close()


def tamper(value: str) -> str:
    """A JWT with its signature changed (its first character: six full bits), or an API
    key with its last character changed."""
    if value.count(".") == 2:
        head, body, sig = value.split(".")
        return f"{head}.{body}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"
    return value[:-1] + ("B" if value[-1] == "A" else "A")


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


def asgi_status(runner: ASGIRunner, change: str | None) -> int:
    headers = []
    for name, value in runner.scope["headers"]:
        if name in CREDENTIAL_HEADERS:
            if change == "missing":
                continue
            if change == "tampered":
                value = tamper(value.decode()).encode()
        headers.append((name, value))
    statuses: list[int] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    asyncio.run(runner.app({**runner.scope, "headers": headers}, _receive, send))
    assert len(statuses) == 1
    return statuses[0]


def wsgi_status(runner: WSGIRunner, change: str | None) -> int:
    env = dict(runner.environ)
    for name in CREDENTIAL_ENVIRON & env.keys():
        if change == "missing":
            del env[name]
        elif change == "tampered":
            env[name] = tamper(env[name])
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
        statuses.append(status)

    body = runner.app(env, start_response)
    b"".join(body)
    getattr(body, "close", lambda: None)()
    assert len(statuses) == 1
    return int(statuses[0].split()[0])


def status(case: Case, change: str | None = None) -> int:
    if isinstance(case.runner, WSGIRunner):
        return wsgi_status(case.runner, change)
    assert isinstance(case.runner, ASGIRunner)
    return asgi_status(case.runner, change)


PEERS = [key for key in peer_cases.PEER_CASES if key[0] != "floor"]


def test_every_peer_case_is_built(cases: dict[tuple[str, str], Case]) -> None:
    assert set(PEERS) <= cases.keys()
    # authgate beside the peers, in the new kinds
    assert {("starlette", "JWT ES256, cached"), ("starlette", "API key, cached")} <= cases.keys()
    assert ("flask", "JWT ES256, cached") in cases


@pytest.mark.parametrize("key", sorted(PEERS), ids="/".join)
def test_peer_accepts_its_credential_and_refuses_others(
    cases: dict[tuple[str, str], Case], key: tuple[str, str]
) -> None:
    case = cases[key]
    case.runner.check()  # what the benchmark does before timing: one 200
    assert status(case) == 200
    assert status(case, "missing") in REFUSED
    assert status(case, "tampered") in REFUSED


@pytest.mark.parametrize(
    "key",
    [
        ("starlette", "JWT ES256, cached"),
        ("starlette", "API key, cached"),
        ("flask", "JWT ES256, cached"),
    ],
    ids="/".join,
)
def test_authgate_beside_the_peers_refuses_others(
    cases: dict[tuple[str, str], Case], key: tuple[str, str]
) -> None:
    case = cases[key]
    case.runner.check()  # 200 with the expected identity method
    assert status(case, "missing") == 401
    assert status(case, "tampered") == 401


def test_pyjwkclient_fetches_the_jwks_once(fx: Fixture, cases: dict[tuple[str, str], Case]) -> None:
    case = cases[("starlette", peer_cases.STARLETTE_PYJWKCLIENT)]
    case.runner.check()
    case.runner(5)
    # Its backend is the only JWKS client of the module's fixture: timed requests hit its cache.
    assert peer_cases.peer_keys(fx).server.requests == 1


def test_sync_dependency_puts_the_fastapi_kind_on_the_loop(fx: Fixture) -> None:
    bare = Case(BARE, "fastapi", ASGIRunner(apps.fastapi_app(), apps.http_scope()))
    built = [bare, *peer_cases.fastapi_peer_cases(fx)]
    try:
        for c in built:
            c.runner.check()
        # Alone, the async dependency runs direct; the sync one needs the loop...
        assert [c.runner.mode for c in built] == ["direct", "direct", "loop"]
        assert built[2].name == peer_cases.FASTAPI_BEARER_SYNC
        # ...and then the whole kind is measured on it, as `measure` does.
        align_modes(built)
        assert [c.runner.mode for c in built] == ["loop", "loop", "loop"]
        assert all(c.runner(2) > 0 for c in built)
    finally:
        close(built)


def test_the_jwks_server_stops_with_the_fixture() -> None:
    fx = Fixture()
    server = peer_cases.peer_keys(fx).server
    assert server.alive
    fx.close()
    assert not server.alive

"""RedisReplayCache against a real redis-server (tests/redis_server.py): never a fake.

A DPoP proof accepted by one middleware, or one OS process, is refused by every other
that shares the Redis; nonces derived from a shared `nonce_secret` are good in any process.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from asgi_auth import AuthMiddleware, JWTAuth
from asgi_auth.dpop import DPoPError, DPoPVerifier, RedisReplayCache
from asgi_auth.errors import ServiceUnavailable
from tests.dpop_client import DPoPKey
from tests.helpers_core import ASGIApp, Client, http_scope, make_client
from tests.idp import IdP, running_idp
from tests.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[1]
URL = "http://testserver/me"
MAX_AGE, LEEWAY = 300.0, 5.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    srv = RedisServer(tmp_path_factory.mktemp("redis"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def url(server: RedisServer) -> str:
    if server.proc is None:  # a test stopped it
        server.restart()
    return server.url


_NAMESPACES = itertools.count(1)


@pytest.fixture
def namespace() -> str:
    return f"t{next(_NAMESPACES)}"  # each test its own keys on the shared server


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def idp() -> Iterator[IdP]:
    with running_idp() as srv:
        srv.add_key("ES256")
        yield srv


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def worker(kind: str, idp: IdP, url: str, namespace: str) -> Client:
    """One middleware with its own authenticator, verifier and Redis client: what each
    worker process of a fleet builds."""
    dpop = DPoPVerifier(replay_cache=RedisReplayCache(url, namespace=namespace))
    auth = JWTAuth(
        idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, dpop_verifier=dpop
    )
    return make_client(kind, [auth])


def headers(token: str, proof: str) -> list[tuple[str, str]]:
    return [("Host", "testserver"), ("Authorization", f"DPoP {token}"), ("DPoP", proof)]


_OTHER_PROCESS = textwrap.dedent(
    """
    import json, sys
    from asgi_auth.dpop import DPoPError, DPoPVerifier, RedisReplayCache

    url, namespace, secret, proofs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    verifier = DPoPVerifier(
        replay_cache=RedisReplayCache(url, namespace=namespace),
        require_nonce=bool(secret),
        nonce_secret=bytes.fromhex(secret) if secret else None,
    )
    out = {"nonce": verifier.current_nonce(), "results": []}
    for proof in proofs:
        try:
            verifier.verify(proof, method="GET", url="http://testserver/me",
                            access_token=None, jkt=None)
            out["results"].append("ok")
        except DPoPError as exc:
            out["results"].append(exc.reason)
    print(json.dumps(out))
    """
)


def other_process(url: str, namespace: str, *proofs: str, secret: bytes = b"") -> dict[str, object]:
    """A verifier in another OS process, against the same Redis."""
    done = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, url, namespace, secret.hex(), *proofs],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout)
    return result


# -- across workers -----------------------------------------------------------------------


def test_a_proof_accepted_once_is_refused_by_another_worker(
    kind: str, idp: IdP, url: str, namespace: str
) -> None:
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    one, two = (worker(kind, idp, url, namespace) for _ in range(2))
    proof = key.proof("GET", URL, token)
    assert one("/me", headers=headers(token, proof)).status == 200
    replayed = two("/me", headers=headers(token, proof))
    assert replayed.status == 401
    assert not replayed.reached
    assert 'error="invalid_dpop_proof"' in replayed.headers["www-authenticate"]
    assert replayed.json()["error_description"] == "DPoP proof replayed"
    assert one("/me", headers=headers(token, proof)).status == 401  # and by the first, too
    # A fresh proof is fine in either; a worker on another namespace shares nothing.
    assert two("/me", headers=headers(token, key.proof("GET", URL, token))).status == 200
    elsewhere = worker(kind, idp, url, namespace + "x")
    assert elsewhere("/me", headers=headers(token, proof)).status == 200


def test_a_proof_accepted_in_another_process_is_refused_here(
    idp: IdP, url: str, namespace: str
) -> None:
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    proof = key.proof("GET", URL, token)
    fresh = key.proof("GET", URL, token)
    # The other process accepts `proof` once and refuses it the second time.
    assert other_process(url, namespace, proof, proof)["results"] == ["ok", "dpop_replay"]
    for kind in ("asgi", "wsgi"):
        here = worker(kind, idp, url, namespace)
        assert here("/me", headers=headers(token, proof)).status == 401
    assert worker("asgi", idp, url, namespace)("/me", headers=headers(token, fresh)).status == 200
    # ... and the other way round: accepted here first, refused there.
    assert other_process(url, namespace, fresh)["results"] == ["dpop_replay"]


def test_concurrent_replays_are_accepted_exactly_once(url: str, namespace: str) -> None:
    proof = DPoPKey().proof("GET", URL)
    verifiers = [
        DPoPVerifier(replay_cache=RedisReplayCache(url, namespace=namespace)) for _ in range(8)
    ]
    results: list[str] = []
    start = threading.Barrier(len(verifiers))

    def check(v: DPoPVerifier) -> None:
        start.wait()
        try:
            v.verify(proof, method="GET", url=URL, access_token=None, jkt=None)
            results.append("ok")
        except DPoPError as exc:
            results.append(exc.reason)

    threads = [threading.Thread(target=check, args=(v,)) for v in verifiers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["dpop_replay"] * 7 + ["ok"]


def test_nonces_from_a_shared_secret_are_good_in_another_process(url: str, namespace: str) -> None:
    # In-process, tests/test_dpop.py::test_verifiers_sharing_a_nonce_secret_accept_each_
    # others_nonces; here the nonce comes from another OS process.
    secret = os.urandom(32)
    key = DPoPKey()
    there = other_process(url, namespace, secret=secret)
    nonce = there["nonce"]
    assert isinstance(nonce, str)
    here = DPoPVerifier(require_nonce=True, nonce_secret=secret)
    here.verify(
        key.proof("GET", URL, nonce=nonce), method="GET", url=URL, access_token=None, jkt=None
    )
    stranger = DPoPVerifier(require_nonce=True, nonce_secret=os.urandom(32))
    with pytest.raises(DPoPError, match="nonce"):
        stranger.verify(
            key.proof("GET", URL, nonce=nonce), method="GET", url=URL, access_token=None, jkt=None
        )
    # And a nonce handed out here is accepted there.
    proof = key.proof("GET", URL, nonce=here.current_nonce())
    assert other_process(url, namespace, proof, secret=secret)["results"] == ["ok"]


# -- what Redis holds ---------------------------------------------------------------------


@pytest.mark.parametrize("age", [0, 100, 290])
def test_an_entry_lives_as_long_as_the_proof_could_be_accepted(
    url: str, namespace: str, raw: redis.Redis, age: int
) -> None:
    cache = RedisReplayCache(url, namespace=namespace)
    key = DPoPKey()
    iat = int(time.time()) - age
    proof = key.proof("GET", URL, iat=iat, jti="the-jti")
    DPoPVerifier(replay_cache=cache, max_age=MAX_AGE, leeway=LEEWAY).verify(
        proof, method="GET", url=URL, access_token=None, jkt=None
    )
    (stored,) = raw.keys(f"{{{namespace}}}:dpop:*")
    window_ms = (iat + MAX_AGE + LEEWAY - time.time()) * 1000
    pttl = raw.pttl(stored)
    assert window_ms - 2000 <= pttl <= window_ms + 1000, (pttl, window_ms)
    cache.close()


def test_no_jti_in_plaintext_in_redis(url: str, namespace: str, raw: redis.Redis) -> None:
    key = DPoPKey()
    jti = "plaintext-jti-" + uuid.uuid4().hex
    DPoPVerifier(replay_cache=RedisReplayCache(url, namespace=namespace)).verify(
        key.proof("GET", URL, jti=jti), method="GET", url=URL, access_token=None, jkt=None
    )
    (stored,) = raw.keys(f"{{{namespace}}}:dpop:*")
    digest = hashlib.sha256(f"{key.jkt}:{jti}".encode()).hexdigest()
    assert stored == f"{{{namespace}}}:dpop:{digest}".encode()
    assert raw.get(stored) == b"1"
    dump = b" ".join([stored, raw.get(stored) or b""])
    assert jti.encode() not in dump
    assert key.jkt.encode() not in dump


def test_the_repr_hides_the_password() -> None:
    cache = RedisReplayCache("redis://user:s3cr3t-pw@127.0.0.1:1/0", namespace="ns")
    assert "s3cr3t-pw" not in repr(cache)
    assert "s3cr3t-pw" not in cache.url
    assert "127.0.0.1:1" in repr(cache)
    assert repr(cache) == "RedisReplayCache('redis://user:***@127.0.0.1:1/0', namespace='ns')"


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="namespace"):
        RedisReplayCache("redis://127.0.0.1:1/0", namespace="a{b}")
    with pytest.raises(ValueError, match="timeout"):
        RedisReplayCache("redis://127.0.0.1:1/0", timeout=0)


# -- Redis down ---------------------------------------------------------------------------


def test_redis_down_is_a_503_and_back_up_works_without_an_app_restart(
    kind: str, idp: IdP, server: RedisServer, url: str, namespace: str
) -> None:
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    app = worker(kind, idp, url, namespace)
    assert app("/me", headers=headers(token, key.proof("GET", URL, token))).status == 200
    server.stop()  # SIGKILL
    try:
        for _ in range(2):
            r = app("/me", headers=headers(token, key.proof("GET", URL, token)))
            assert r.status == 503, r.body
            assert r.headers["retry-after"] == "5"
            assert r.json()["error"] == "temporarily_unavailable"
            assert not r.reached
    finally:
        server.restart()
    r = app("/me", headers=headers(token, key.proof("GET", URL, token)))
    assert r.status == 200, r.body


def test_a_redis_that_never_answers_holds_a_request_no_longer_than_the_timeout() -> None:
    # A listener that accepts connections and never replies: a hung Redis.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        cache = RedisReplayCache(f"redis://:pw@127.0.0.1:{port}/0", timeout=0.2)
        verifier = DPoPVerifier(replay_cache=cache)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as caught:
            verifier.verify(
                DPoPKey().proof("GET", URL), method="GET", url=URL, access_token=None, jkt=None
            )
        elapsed = time.monotonic() - started
    assert elapsed < 1.0, elapsed
    assert caught.value.status == 503
    assert caught.value.reason == "dpop_replay_unavailable"
    assert "pw" not in str(caught.value.context)
    assert "TimeoutError" in str(caught.value.context)


def test_under_asgi_a_hung_redis_does_not_block_the_event_loop(idp: IdP) -> None:
    key = DPoPKey()
    token = idp.token(cnf={"jkt": key.jkt})
    with socket.socket() as silent:  # accepts connections, never replies
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        cache = RedisReplayCache(f"redis://127.0.0.1:{silent.getsockname()[1]}/0", timeout=0.3)
        auth = JWTAuth(
            idp.issuer,
            "api",
            algorithms=["ES256"],
            jwks_uri=idp.jwks_uri,
            dpop_verifier=DPoPVerifier(replay_cache=cache),
        )
        app = ASGIApp()
        mw = AuthMiddleware(app, authenticators=[auth])
        scope = http_scope("/me", headers=headers(token, key.proof("GET", URL, token)))
        sent: list[dict[str, Any]] = []
        ticks: list[float] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        async def main() -> float:
            done = asyncio.Event()

            async def ticker() -> None:
                while not done.is_set():
                    ticks.append(time.monotonic())
                    await asyncio.sleep(0.01)

            task = asyncio.create_task(ticker())
            started = time.monotonic()
            await mw(scope, receive, send)
            elapsed = time.monotonic() - started
            done.set()
            await task
            return elapsed

        elapsed = asyncio.run(main())
    assert sent[0]["status"] == 503
    assert (b"retry-after", b"5") in sent[0]["headers"]
    assert not app.calls
    assert 0.25 <= elapsed < 1.5, elapsed
    # The loop kept running while the request waited on Redis: no gap near the wait.
    assert len(ticks) >= 10
    assert max(b - a for a, b in itertools.pairwise(ticks)) < 0.2

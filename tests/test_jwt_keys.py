"""JWTAuth's keys under pressure: rotation while a fetch is in flight, stale keys while one
request refreshes, deadlines, cache lifetimes and which key may verify which token.

Against the real JWKS/discovery server of tests/idp.py on 127.0.0.1; tokens by joserfc.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest

from asgi_auth import AuthMiddleware, Identity, JWTAuth
from asgi_auth.authenticator import RequestInfo
from asgi_auth.errors import AuthError, ServiceUnavailable
from asgi_auth.flow import BUSY, Effect, SyncDriver
from asgi_auth.jose import jwk_to_key
from tests.dpop_client import rsa_key_with_exponent
from tests.idp import IdP, mint, new_key, public_jwk, running_idp

REQ = RequestInfo("GET", "/", "http", "127.0.0.1")

pytestmark = pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as server:
        yield server


@pytest.fixture
def clock(idp: IdP) -> Clock:
    c = Clock()
    idp.clock = c
    return c


def check(auth: JWTAuth, token: str) -> Identity:
    cached = auth.cached(token)
    return cached if cached is not None else SyncDriver().run(auth.flow(token, REQ))


def refused(auth: JWTAuth, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        check(auth, token)
    return info.value


def finish(flow: Any, result: Any) -> Identity:
    with pytest.raises(StopIteration) as stop:
        flow.send(result)
    ident: Identity = stop.value.value
    return ident


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.01)


async def outcome(driver: Any, auth: JWTAuth, token: str) -> str:
    """A token's fate through an async driver: the subject, or "status reason"."""
    try:
        return str((await driver.run(auth.flow(token, REQ))).subject)
    except AuthError as err:
        return f"{err.status} {err.reason}"


def asgi_get(app: Any, token: str) -> httpx2.Response:
    """One GET through an ASGI app, on an event loop of its own."""

    async def main() -> httpx2.Response:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
            return await c.get("/", headers=bearer(token))

    return asyncio.run(main())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _identity_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = scope["auth"].subject.encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [environ["wsgi_auth.identity"].subject.encode()]


def _environ(token: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": "/",
        "wsgi.url_scheme": "http",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
    }


# -- a rotation while its refetch is in flight ------------------------------------------


def test_a_new_kid_arriving_during_its_refetch_waits_for_it(idp: IdP, clock: Clock) -> None:
    # The first token with a rotated kid starts the refetch; a second one arriving before
    # the answer must join that fetch, not be refused by the refetch rate limit.
    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock)
    assert check(auth, idp.token("old")).subject == "user-1"
    idp.add_key("ES256", "new")
    first = auth.flow(idp.token("new", jti="a"), REQ)
    second = auth.flow(idp.token("new", jti="b"), REQ)
    effect = next(first)
    joined = next(second)  # before the fix: TokenError "unknown signing key"
    assert isinstance(joined, Effect)
    # It waits for that fetch, and never starts one: the refetch limit still holds.
    assert joined.key == effect.key and joined.join and not joined.start
    generation = auth._keys.generation
    answer = effect.sync()  # the one real fetch, as the driver would share it
    assert finish(first, answer).subject == "user-1"
    assert finish(second, answer).subject == "user-1"
    assert idp.fetches == 2
    assert auth._keys.generation == generation + 1  # the shared answer was merged once


def test_50_concurrent_asgi_requests_with_a_rotated_kid_cause_one_refetch(idp: IdP) -> None:
    idp.add_key("RS256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["RS256"], jwks_uri=idp.jwks_uri)
    app = AuthMiddleware(_identity_app, authenticators=[auth])

    async def get_all(tokens: list[str]) -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(*(c.get("/", headers=bearer(t)) for t in tokens))
        return [r.status_code for r in rs]

    async def held(tokens: list[str]) -> list[int]:
        async def release() -> None:
            await asyncio.to_thread(wait_until, lambda: idp.fetches == 2, "the refetch")
            await asyncio.sleep(0.2)  # the other requests reach the middleware meanwhile
            idp.stall_event.set()

        statuses, _ = await asyncio.gather(get_all(tokens), asyncio.wait_for(release(), 15))
        return statuses

    assert asyncio.run(get_all([idp.token("old")])) == [200]  # keys cached, old kid only
    idp.add_key("RS256", "new")
    idp.mode = "stall"  # the refetch is held until every request has arrived
    assert asyncio.run(held([idp.token("new", jti=str(i)) for i in range(50)])) == [200] * 50
    assert idp.fetches == 2


def test_20_wsgi_threads_with_a_rotated_kid_cause_one_refetch(idp: IdP) -> None:
    from wsgi_auth import AuthMiddleware as WSGIAuth

    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    app = WSGIAuth(_wsgi_app, authenticators=[auth])
    assert b"".join(app(_environ(idp.token("old")), lambda *a: None)) == b"user-1"
    idp.add_key("ES256", "new")
    idp.mode = "stall"
    barrier = threading.Barrier(20)
    results: list[str] = []

    def worker(i: int) -> None:
        status: list[str] = []
        env = _environ(idp.token("new", jti=str(i)))
        barrier.wait(timeout=30)
        body = b"".join(app(env, lambda s, h, *a: status.append(s)))
        results.append(f"{status[0]} {body.decode()}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    wait_until(lambda: idp.fetches == 2, "the refetch")
    time.sleep(0.2)  # the other threads reach the middleware meanwhile
    idp.stall_event.set()
    for t in threads:
        t.join(timeout=60)
    assert results == ["200 OK user-1"] * 20
    assert idp.fetches == 2


def test_a_cancelled_request_neither_aborts_its_fetch_nor_lets_others_start_one(
    idp: IdP,
) -> None:
    # The first token with a new kid starts the refetch; its client goes away. The fetch
    # runs on for the tokens waiting on it, and tokens with other unknown kids wait for it
    # too (then get 401) instead of each starting a fetch of their own.

    from asgi_auth.flow import AsyncDriver

    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    driver = AsyncDriver()
    claims = {"iss": idp.issuer, "aud": "api", "sub": "x", "exp": int(time.time()) + 600}
    stranger = new_key("ES256")

    async def main() -> tuple[list[str], list[str]]:
        assert await outcome(driver, auth, idp.token("old")) == "user-1"
        idp.add_key("ES256", "new")
        idp.mode = "stall"
        first = asyncio.create_task(outcome(driver, auth, idp.token("new", jti="first")))
        await asyncio.to_thread(wait_until, lambda: idp.fetches == 2, "the refetch")
        waiting = [
            asyncio.create_task(outcome(driver, auth, idp.token("new", jti=str(i))))
            for i in range(5)
        ]
        await asyncio.sleep(0.05)  # they reach the driver and wait on the fetch
        first.cancel()
        kids = [f"made-up-{i}" for i in range(20)]
        tokens = [mint(stranger, claims, alg="ES256", kid=kid) for kid in kids]
        unknown = [asyncio.create_task(outcome(driver, auth, t)) for t in tokens]
        await asyncio.sleep(0.05)
        idp.stall_event.set()
        return list(await asyncio.gather(*waiting)), list(await asyncio.gather(*unknown))

    waited, strangers = asyncio.run(main())
    assert waited == ["user-1"] * 5
    assert strangers == ["401 unknown_kid"] * 20
    assert idp.fetches == 2


def test_the_answer_of_a_fetch_whose_request_went_away_is_kept(idp: IdP) -> None:
    # Nobody waits on the refetch when its request is cancelled: its answer still lands in
    # the key set, so the next token with that kid needs no fetch of its own.
    from asgi_auth.flow import AsyncDriver

    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    driver = AsyncDriver()

    async def main() -> str:
        await driver.run(auth.flow(idp.token("old"), REQ))
        idp.add_key("ES256", "new")
        idp.mode = "stall"
        first = asyncio.create_task(driver.run(auth.flow(idp.token("new", jti="1"), REQ)))
        await asyncio.to_thread(wait_until, lambda: idp.fetches == 2, "the refetch")
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        idp.stall_event.set()
        later = idp.token("new", jti="2")
        # No I/O needed once the orphaned answer is merged: `quick` verifies it.
        await asyncio.to_thread(wait_until, lambda: auth.quick(later) is not None, "the merge")
        return (await driver.run(auth.flow(later, REQ))).subject

    assert asyncio.run(main()) == "user-1"
    assert idp.fetches == 2


def test_a_refetch_in_another_middleware_is_no_reason_to_refuse(idp: IdP) -> None:
    # One JWTAuth behind two middlewares (two drivers): a token with the new kid arriving
    # in one while the other's refetch runs cannot join it; it fetches once, not 503.
    from asgi_auth.flow import AsyncDriver

    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    one, other = AsyncDriver(), AsyncDriver()

    async def main() -> list[str]:
        assert await outcome(one, auth, idp.token("old")) == "user-1"
        idp.add_key("ES256", "new")
        idp.mode = "stall"
        first = asyncio.create_task(outcome(one, auth, idp.token("new", jti="1")))
        await asyncio.to_thread(wait_until, lambda: idp.fetches == 2, "the refetch")
        second = asyncio.create_task(outcome(other, auth, idp.token("new", jti="2")))
        await asyncio.to_thread(wait_until, lambda: idp.fetches == 3, "the second fetch")
        idp.stall_event.set()
        return [await first, await second]

    assert asyncio.run(main()) == ["user-1", "user-1"]
    assert idp.fetches == 3


def test_fetching_for_another_middleware_keeps_the_refetch_limit(idp: IdP) -> None:
    # While one driver's refetch is held, tokens with kids nobody published arrive at the
    # other: one fetch there, then the refetch limit, not a fetch per token.

    from asgi_auth.flow import AsyncDriver

    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    one, other = AsyncDriver(), AsyncDriver()
    stranger = new_key("ES256")
    claims = {"iss": idp.issuer, "aud": "api", "sub": "x", "exp": int(time.time()) + 600}

    async def main() -> list[str]:
        assert await outcome(one, auth, idp.token("old")) == "user-1"
        idp.add_key("ES256", "new")
        idp.mode = "stall"
        held = asyncio.create_task(outcome(one, auth, idp.token("new")))
        await asyncio.to_thread(wait_until, lambda: idp.fetches == 2, "the held refetch")
        idp.mode = "ok"  # the held fetch stays held; new ones are answered
        tokens = [mint(stranger, claims, alg="ES256", kid=f"made-up-{i}") for i in range(20)]
        answers = [await outcome(other, auth, t) for t in tokens]
        idp.stall_event.set()
        assert await held == "user-1"
        return answers

    assert asyncio.run(main()) == ["401 unknown_kid"] * 20
    assert idp.fetches == 3


def _eight_threads_share_one_failure(
    idp: IdP, auth: JWTAuth, fetched: Callable[[], bool], caplog: pytest.LogCaptureFixture
) -> list[str]:
    """Eight WSGI threads' tokens wait on one held fetch that then fails: each gets 503;
    returns the warnings logged."""
    driver = SyncDriver()
    statuses: list[int] = []

    def worker(i: int) -> None:
        try:
            driver.run(auth.flow(idp.token(jti=str(i)), REQ))
            statuses.append(200)
        except AuthError as err:
            statuses.append(err.status)

    with caplog.at_level("WARNING", logger="asgi_auth"):
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        wait_until(fetched, "the fetch")
        time.sleep(0.2)  # the other threads join it meanwhile
        idp.stall_event.set()
        for t in threads:
            t.join(timeout=60)
    assert statuses == [503] * 8
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_a_failed_fetch_shared_by_threads_is_logged_once(
    idp: IdP, caplog: pytest.LogCaptureFixture
) -> None:
    idp.add_key("ES256")
    idp.mode = "stall500"  # held, then a 500
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    warnings = _eight_threads_share_one_failure(idp, auth, lambda: idp.fetches == 1, caplog)
    assert idp.fetches == 1
    assert len([w for w in warnings if "JWKS refresh failed" in w]) == 1


def test_a_failed_discovery_shared_by_threads_is_logged_once(
    idp: IdP, caplog: pytest.LogCaptureFixture
) -> None:
    idp.add_key("ES256")
    idp.discovery = "stall500"
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])
    warnings = _eight_threads_share_one_failure(
        idp, auth, lambda: idp.discovery_fetches == 1, caplog
    )
    assert idp.discovery_fetches == 1
    assert len([w for w in warnings if "discovery failed" in w]) == 1


def test_a_fetch_counts_as_in_flight_for_as_long_as_its_http_may_take(
    idp: IdP, clock: Clock
) -> None:
    # JWTAuth's own time-out shorter than its HTTP client's: a token with the new kid
    # arriving after the first but within the client's time-out still waits for it.
    from asgi_auth.http import HTTP

    idp.add_key("ES256", "old")
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        clock=clock,
        timeout=0.3,
        http=HTTP(timeout=2.0),
    )
    check(auth, idp.token("old"))
    idp.add_key("ES256", "new")
    first = auth.flow(idp.token("new", jti="a"), REQ)
    effect = next(first)
    clock.advance(0.6)
    second = auth.flow(idp.token("new", jti="b"), REQ)
    assert next(second).key == effect.key  # before: 401 unknown_kid, the mark expired
    answer = effect.sync()
    assert finish(first, answer).subject == "user-1"
    assert finish(second, answer).subject == "user-1"


def test_every_distinct_answer_is_merged(idp: IdP, clock: Clock) -> None:
    # Requests that shared one fetch merge its answer once; a different answer (a later
    # fetch) is merged even if another answer was merged in between.
    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock)
    check(auth, idp.token("old"))
    clock.advance(301)  # a refresh is due
    refresh = auth.flow(idp.token("old", jti="a"), REQ)
    fetch = next(refresh)
    idp.add_key("ES256", "new")
    newcomer = auth.flow(idp.token("new"), REQ)
    assert next(newcomer).join  # it must wait: its kid is unknown
    idp.hidden = {"new"}
    older = fetch.sync()  # the refresh's answer predates the new key
    idp.hidden = set()
    assert finish(refresh, older).subject == "user-1"
    assert finish(newcomer, fetch.sync()).subject == "user-1"  # a later, different answer


# -- stale keys serve while one request refreshes ---------------------------------------


def test_past_the_ttl_only_the_refreshing_request_waits(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock)
    check(auth, idp.token())
    clock.advance(301)  # past max-age=300: the keys are stale, still usable
    first = auth.flow(idp.token(jti="a"), REQ)
    second = auth.flow(idp.token(jti="b"), REQ)
    effect = next(first)
    other = next(second)
    # It knows the kid and has usable keys: it does not ask to wait for the fetch ...
    assert not other.join
    # ... so while the first request fetches, the driver answers BUSY and it goes on.
    assert finish(second, BUSY).subject == "user-1"
    assert finish(first, effect.sync()).subject == "user-1"
    assert idp.fetches == 2


def test_a_stalled_issuer_delays_only_the_request_that_fetches(idp: IdP, clock: Clock) -> None:
    from wsgi_auth import AuthMiddleware as WSGIAuth

    idp.add_key("ES256")
    auth = JWTAuth(
        idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock, timeout=30
    )
    app = WSGIAuth(_wsgi_app, authenticators=[auth])
    assert b"".join(app(_environ(idp.token()), lambda *a: None)) == b"user-1"
    clock.advance(301)
    idp.mode = "stall"
    fetcher = threading.Thread(
        target=lambda: b"".join(app(_environ(idp.token(jti="a")), lambda *a: None))
    )
    fetcher.start()
    try:
        wait_until(lambda: idp.fetches == 2, "the refresh")
        # Answered with the stale keys while the refresh is still held by the issuer.
        assert b"".join(app(_environ(idp.token(jti="b")), lambda *a: None)) == b"user-1"
        assert fetcher.is_alive()
    finally:
        idp.stall_event.set()
        fetcher.join(timeout=60)


# -- time-outs ----------------------------------------------------------------------------


def test_an_issuer_dripping_its_answer_is_cut_off_by_the_deadline(idp: IdP) -> None:
    # 16 bytes every 50 ms: each read is quick, the whole answer takes over a second.
    from wsgi_auth import AuthMiddleware as WSGIAuth

    idp.add_key("RS256")
    idp.mode = "drip"
    auth = JWTAuth(idp.issuer, "api", algorithms=["RS256"], jwks_uri=idp.jwks_uri, timeout=0.3)
    status: list[str] = []
    app = WSGIAuth(_wsgi_app, authenticators=[auth])
    body = b"".join(app(_environ(idp.token()), lambda s, h, *a: status.append(s)))
    assert status == ["503 Service Unavailable"], body
    aauth = JWTAuth(idp.issuer, "api", algorithms=["RS256"], jwks_uri=idp.jwks_uri, timeout=0.3)
    r = asgi_get(AuthMiddleware(_identity_app, authenticators=[aauth]), idp.token())
    assert r.status_code == 503 and r.headers["retry-after"]


def test_an_issuer_dripping_its_headers_is_cut_off_by_the_deadline(idp: IdP, clock: Clock) -> None:
    from asgi_auth.http import HTTP
    from wsgi_auth import AuthMiddleware as WSGIAuth

    idp.add_key("ES256")
    idp.mode = "drip-headers"
    http = HTTP(timeout=0.3)
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        timeout=0.3,
        http=http,
        clock=clock,
    )
    status: list[str] = []
    app = WSGIAuth(_wsgi_app, authenticators=[auth])
    body = b"".join(app(_environ(idp.token()), lambda s, h, *a: status.append(s)))
    assert status == ["503 Service Unavailable"], body
    # The exchange was abandoned, not left running: the issuer, still dripping (it drips
    # until released, or 20 s), sees the connection closed.
    wait_until(lambda: idp.drip_cut, "the issuer to see the connection closed")
    assert not idp.drip_capped
    idp.stall_event.set()
    idp.mode = "ok"
    # The cut is shown; the fetch after it only has to succeed, on a new connection, which
    # a loaded machine may not make within 0.3 s.
    auth.timeout = http.timeout = 10.0
    clock.advance(6)  # past the retry pause: the same JWTAuth fetches again, and is answered
    assert check(auth, idp.token(jti="later")).subject == "user-1"


def test_a_stalled_fetch_does_not_hold_up_the_process_exit(idp: IdP) -> None:
    # A gunicorn worker told to stop must not wait for a server that drips forever.
    import subprocess
    import sys

    idp.add_key("ES256")
    idp.mode = "drip-headers"
    script = (
        "from asgi_auth.http import HTTP\n"
        "try:\n"
        f"    HTTP(timeout=0.3).request('GET', {idp.jwks_uri!r})\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=15, check=True
    )
    assert done.stdout.strip() == "TimeoutError"
    assert not idp.drip_capped  # it exited while the issuer was still dripping


def test_a_stalled_issuer_under_asgi_is_503(idp: IdP) -> None:
    idp.add_key("ES256")
    idp.mode = "stall"
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, timeout=0.3)
    r = asgi_get(AuthMiddleware(_identity_app, authenticators=[auth]), idp.token())
    assert r.status_code == 503
    assert r.headers["retry-after"]
    assert r.json()["error"] == "temporarily_unavailable"


# -- how long a verified token counts ---------------------------------------------------


def _cached_with_key_a_missing(idp: IdP, clock: Clock) -> tuple[JWTAuth, str]:
    """Keys a and b; a token of a verified and cached (cache TTL and exp far off); then a
    refresh, by a token of b, whose answer lacks key a."""
    idp.add_key("ES256", "a")
    idp.add_key("ES256", "b")
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        clock=clock,
        missing_key_grace=900,
        cache_ttl=3600,
    )
    token_a = idp.token("a", exp=int(clock.now) + 7200)
    check(auth, token_a)
    idp.hidden = {"a"}
    clock.advance(301)
    check(auth, idp.token("b", jti="refresh"))
    return auth, token_a


def test_cached_tokens_end_with_the_missing_key_grace(idp: IdP, clock: Clock) -> None:
    # All traffic cached: no request runs the slow path that drops the key, and still the
    # tokens it verified stop counting when its grace ends.
    auth, token_a = _cached_with_key_a_missing(idp, clock)
    clock.advance(899)
    assert auth.cached(token_a) is not None  # within the grace
    clock.advance(2)
    assert auth.cached(token_a) is None


def test_a_key_back_in_the_answers_keeps_its_cached_tokens(idp: IdP, clock: Clock) -> None:
    auth, token_a = _cached_with_key_a_missing(idp, clock)
    idp.hidden = set()
    clock.advance(301)
    check(auth, idp.token("b", jti="2"))  # a is back
    clock.advance(900)
    assert auth.cached(token_a) is not None


def test_same_kid_with_new_material_voids_cached_tokens(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256", "k1")
    auth = JWTAuth(
        idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock, cache_ttl=3600
    )
    old = idp.token(exp=int(clock.now) + 7200)
    check(auth, old)
    idp.add_key("ES256", "k1")  # the issuer reuses the kid for a new key
    clock.advance(301)
    assert check(auth, idp.token(jti="new")).subject == "user-1"
    assert auth.cached(old) is None
    assert refused(auth, old).description == "invalid signature"


def test_the_token_cache_ends_at_its_ttl_and_is_bounded(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        clock=clock,
        cache_ttl=120,
        max_cache_entries=3,
    )
    token = idp.token(exp=int(clock.now) + 3600)
    ident = check(auth, token)
    clock.advance(119)
    assert auth.cached(token) is ident
    clock.advance(2)
    assert auth.cached(token) is None  # the TTL, though exp is an hour away
    assert check(auth, token).subject == "user-1"  # verified afresh, and cached again
    assert auth.cached(token) is not None
    tokens = [idp.token(jti=str(i), exp=int(clock.now) + 3600) for i in range(10)]
    for t in tokens:
        check(auth, t)
    assert 1 <= sum(auth.cached(t) is not None for t in [token, *tokens]) <= 3


# -- which key may verify which token ---------------------------------------------------


def _pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return bytes(
        key.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def test_the_key_a_kid_names_must_fit_the_algorithm(idp: IdP) -> None:
    p256 = idp.add_key("ES256", "p256")
    rsa = idp.add_key("RS256", "rsa")
    p384 = new_key("ES384")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256", "ES384", "RS256", "PS256"])
    claims = {"iss": idp.issuer, "aud": "api", "sub": "s", "exp": int(time.time()) + 600}
    assert check(auth, mint(p256, claims, alg="ES256", kid="p256")).subject == "s"
    assert check(auth, mint(rsa, claims, alg="RS256", kid="rsa")).subject == "s"
    assert check(auth, mint(rsa, claims, alg="PS256", kid="rsa")).subject == "s"
    misfits = [
        mint(p384, claims, alg="ES384", kid="p256"),  # a P-256 key for ES384
        mint(p256, claims, alg="ES256", kid="rsa"),  # an RSA key for ES256
        mint(rsa, claims, alg="RS256", kid="p256"),  # an EC key for RS256
    ]
    for token in misfits:
        err = refused(auth, token)
        assert err.status == 401, token
    assert idp.fetches == 1  # a kid it knows is no reason to refetch


def test_an_rsa_key_is_never_an_hmac_secret(idp: IdP) -> None:
    import hashlib
    import hmac

    # An issuer that really does use HS256 too: its secret and its RSA key side by side.
    rsa = new_key("RS256")
    secret = new_key("HS256")
    keys = {"keys": [public_jwk(rsa, "rsa"), {**secret.as_dict(), "kid": "hs"}]}
    auth = JWTAuth("svc", "api", algorithms=["RS256", "HS256"], keys=keys)
    claims = {"iss": "svc", "aud": "api", "sub": "s", "exp": int(time.time()) + 600}
    assert check(auth, mint(rsa, claims, alg="RS256", kid="rsa")).subject == "s"
    assert check(auth, mint(secret, claims, alg="HS256", kid="hs")).subject == "s"
    body = json.dumps(claims).encode()
    for material in (_pem(rsa), json.dumps(public_jwk(rsa, "rsa")).encode()):
        for kid in ("rsa", None):
            header = {"alg": "HS256", **({"kid": kid} if kid else {})}
            head = _b64(json.dumps(header).encode())
            signing_input = f"{head}.{_b64(body)}".encode()
            sig = hmac.new(material, signing_input, hashlib.sha256).digest()
            err = refused(auth, f"{signing_input.decode()}.{_b64(sig)}")
            assert err.status == 401


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def _rsa_jwk(n_bits: int, e: int) -> dict[str, str]:
    # Any odd n of that size makes a public key: nothing is verified with it here.
    n = (1 << (n_bits - 1)) | (1 << (n_bits - 2)) | 1
    return {"kty": "RSA", "n": _uint(n), "e": _uint(e)}


@pytest.mark.parametrize(
    ("n_bits", "e", "usable"),
    [
        (2048, 65537, True),
        (2048, 3, True),
        (8192, 65537, True),
        (3072, 2**32 + 1, True),  # 33 bits
        (2047, 65537, False),
        (8193, 65537, False),  # checks cost about the square of the size
        (16384, 65537, False),
        (2048, 2**33 + 1, False),  # 34 bits: each check costs as many steps as e has bits
        (3072, 2**3070 + 1, False),  # the report's 3071-bit exponent
        (2048, 65536, False),  # even
        (2048, 1, False),
    ],
    ids=lambda v: f"2**{v.bit_length() - 1}+{v & 0xFFFF}" if type(v) is int and v > 2**20 else None,
)
def test_rsa_keys_of_unreasonable_size_or_exponent_are_refused(
    n_bits: int, e: int, usable: bool
) -> None:
    jwk = _rsa_jwk(n_bits, e)
    if usable:
        assert jwk_to_key(jwk).kty == "RSA"
    else:
        with pytest.raises(ValueError):
            jwk_to_key(jwk)
        with pytest.raises(ValueError):  # nor from configuration
            JWTAuth("svc", "api", algorithms=["RS256"], keys=jwk)


def test_a_jwks_key_with_a_huge_exponent_is_skipped_and_logged(
    idp: IdP, caplog: pytest.LogCaptureFixture
) -> None:
    import jwt as pyjwt

    idp.add_key("RS256", "good")
    private, jwk = rsa_key_with_exponent(2048, 2047)
    idp.extra_jwks = [{**jwk, "kid": "big-e"}]
    auth = JWTAuth(idp.issuer, "api", algorithms=["RS256"], jwks_uri=idp.jwks_uri)
    claims = {"iss": idp.issuer, "aud": "api", "sub": "s", "exp": int(time.time()) + 600}
    bad = pyjwt.encode(claims, private, algorithm="RS256", headers={"kid": "big-e"})
    with caplog.at_level("WARNING", logger="asgi_auth"):
        assert check(auth, idp.token("good")).subject == "user-1"  # the others still serve
        err = refused(auth, bad)
    assert (err.status, err.reason) == (401, "unknown_kid")
    skipped = [r.getMessage() for r in caplog.records if "JWKS key skipped" in r.getMessage()]
    assert skipped and all("kid='big-e'" in m and "exponent" in m for m in skipped)


def test_a_jwks_without_kids_is_searched_by_alg_kty_and_use(idp: IdP) -> None:
    ec = new_key("ES256")
    rs = new_key("RS256")
    ps_only = new_key("RS256")
    enc = new_key("RS256")
    idp.extra_jwks = [
        public_jwk(ec, None),
        public_jwk(rs, None),
        public_jwk(ps_only, None, alg="PS256"),
        {**public_jwk(enc, None), "use": "enc"},
    ]
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256", "RS256", "PS256"])
    claims = {"iss": idp.issuer, "aud": "api", "sub": "s", "exp": int(time.time()) + 600}
    assert check(auth, mint(ec, claims, alg="ES256", kid=None)).subject == "s"
    assert check(auth, mint(rs, claims, alg="RS256", kid=None)).subject == "s"
    assert check(auth, mint(ps_only, claims, alg="PS256", kid=None)).subject == "s"
    # Its JWK says PS256 only; an encryption key never verifies a signature.
    assert refused(auth, mint(ps_only, claims, alg="RS256", kid=None)).status == 401
    assert refused(auth, mint(enc, claims, alg="RS256", kid=None)).status == 401
    assert idp.fetches == 1


# -- how long fetched keys are kept -----------------------------------------------------


@pytest.mark.parametrize(
    ("cache_control", "kept", "refetched"),
    [
        ("max-age=999999", 850, 1050),  # capped by jwks_max_ttl=1000 (refresh ahead at 900)
        ("no-store", 50, 61),  # jwks_min_ttl=60
        ("no-cache, max-age=600", 50, 61),
        (None, 500, 601),  # no header: 600 s, refresh ahead at 540
    ],
)
def test_jwks_ttl_follows_cache_control_within_both_bounds(
    idp: IdP, clock: Clock, cache_control: str | None, kept: float, refetched: float
) -> None:
    idp.add_key("ES256")
    idp.cache_control = cache_control
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        clock=clock,
        jwks_min_ttl=60,
        jwks_max_ttl=1000,
    )
    start = clock.now
    check(auth, idp.token())
    clock.now = start + kept
    check(auth, idp.token(jti="kept"))
    assert idp.fetches == 1
    clock.now = start + refetched
    check(auth, idp.token(jti="refetched"))
    assert idp.fetches == 2


# -- event loops and discovery -----------------------------------------------------------


def test_each_event_loop_fetches_for_itself(idp: IdP) -> None:
    # Every test client runs its own loop: the second loop's fetch (a rotation) must not
    # touch a client, lock or future of the first.
    idp.add_key("ES256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])
    app = AuthMiddleware(_identity_app, authenticators=[auth])

    async def get(token: str) -> int:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
            return (await c.get("/", headers=bearer(token))).status_code

    assert asyncio.run(get(idp.token("old"))) == 200
    assert (idp.discovery_fetches, idp.fetches) == (1, 1)
    idp.add_key("ES256", "new")
    assert asyncio.run(get(idp.token("new"))) == 200
    assert (idp.discovery_fetches, idp.fetches) == (1, 2)
    with asyncio.Runner() as runner:  # and a loop that is still open
        assert runner.run(get(idp.token("new", jti="x"))) == 200


@pytest.mark.parametrize("discovery", ["oidc", "rfc8414"])
def test_discovery_for_an_issuer_with_a_path(idp: IdP, discovery: str) -> None:
    # OIDC appends the well-known path to the issuer's; RFC 8414 §3.1 inserts it before.
    idp.issuer_path = "/tenants/acme"
    idp.discovery = discovery
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])
    assert check(auth, idp.token()).issuer == idp.base + "/tenants/acme"


def test_a_503_names_no_key_and_no_token(idp: IdP) -> None:
    idp.add_key("ES256")
    idp.mode = "500"
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    token = idp.token()
    err = refused(auth, token)
    assert isinstance(err, ServiceUnavailable)
    assert token not in repr(err) and token.split(".")[2] not in str(err.context)


def test_a_forked_worker_fetches_with_its_own_client_and_threads(idp: IdP) -> None:
    # gunicorn --preload: the master may have fetched before forking its workers. A worker
    # must not use the master's pooled sockets or its (absent) fetch threads.
    import os

    from asgi_auth.http import HTTP

    http = HTTP(timeout=5)
    assert http.request("GET", idp.jwks_uri).status == 200  # pool and threads made here
    pid = os.fork()
    if pid == 0:  # the worker
        code = 1
        try:
            code = 0 if http.request("GET", idp.jwks_uri).status == 200 else 2
        finally:
            os._exit(code)
    # Bounded: a child stuck on a lock held at fork time fails the test, not hangs the suite.
    deadline = time.monotonic() + 30
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked worker did not finish its fetch within 30 s")
        time.sleep(0.02)  # polling a child's exit, not a timing assertion
    assert os.waitstatus_to_exitcode(done[1]) == 0
    assert idp.fetches == 2

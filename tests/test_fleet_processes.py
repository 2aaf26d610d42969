"""A fleet of real server processes sharing one real redis-server (issue 14, items 6 and 8).

Three uvicorn processes (`one` and `two` throttle with `fail="closed"`, `spare` with
`fail="open"`) and one `gunicorn -w 2`, each importing tests/fleet_app.py: nothing is
shared between them but the Redis (DPoP replay records, throttle counts), the SQLite key
file and the configuration (a nonce secret). Every answer carries the pid of the process
that gave it (`X-Worker`), so each test checks which process answered.

No timing: the throttle window is an hour, which never passes during a test. Client
addresses come from a counter (the peer 127.0.0.1 is a trusted proxy; the address is
the `X-Forwarded-For`), DPoP keys and proofs are new per test: no two tests share a count
or a replay record.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from asgi_auth.keys import SQLiteKeyStore
from tests.dpop_client import DPoPKey
from tests.fleet_app import AUDIENCE, NONCE_ISSUER, PLAIN_ISSUER
from tests.helpers_core import altered
from tests.idp import mint, new_key, public_jwk
from tests.redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
LIMIT = 4  # failures per address per hour
WINDOW = 3600
#: The host every request names, as behind a load balancer: a DPoP proof's `htu` is the
#: same whichever process gets it.
API_HOST = "api.fleet.test"
ME = f"http://{API_HOST}/me"
START_ATTEMPTS = 5
READY_SECONDS = 30.0


class ServerProcess:
    """A server command on a free 127.0.0.1 port, ready once `/health` answers 200."""

    def __init__(self, name: str, argv: Callable[[int], list[str]], env: dict[str, str]) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def launch(self, directory: Path) -> None:
        self.port = free_port()
        self.log = directory / f"{self.name}-{self.port}.log"
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv(self.port),
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
            )

    def wait_ready(self) -> bool:
        """True once `/health` answers; False when the process exited (port taken?)."""
        assert self.proc is not None
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:  # bounded readiness polling
            if self.proc.poll() is not None:
                return False
            try:
                if httpx2.get(self.url + "/health", timeout=1).status_code == 200:
                    return True
            except httpx2.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"{self.name} not ready: {self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log else ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the arbiter and its workers
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


def start_all(servers: list[ServerProcess], directory: Path) -> None:
    """Start them side by side; one whose port was taken meanwhile starts again."""
    pending = list(servers)
    for _ in range(START_ATTEMPTS):
        for s in pending:
            s.launch(directory)
        failed = [s for s in pending if not s.wait_ready()]
        for s in failed:
            log = s.output().lower()
            if "address already in use" not in log and "connection in use" not in log:
                raise AssertionError(f"{s.name} exited: {s.output()}")
            s.stop()
        pending = failed
        if not pending:
            return
    raise AssertionError(f"could not start {[s.name for s in pending]}")


def uvicorn(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "tests.fleet_app:asgi_app",
        "--host",
        HOST,
        "--port",
        str(port),
        "--no-proxy-headers",  # the gate reads X-Forwarded-For itself (trusted_proxies)
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def gunicorn(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        "2",
        "--worker-class",
        "sync",
        "--bind",
        f"{HOST}:{port}",
        "--log-level",
        "warning",
        "--graceful-timeout",
        "5",
        "tests.fleet_app:wsgi_app()",
    ]


@dataclass
class Fleet:
    redis: RedisServer
    one: ServerProcess
    two: ServerProcess
    spare: ServerProcess
    wsgi: ServerProcess
    store: SQLiteKeyStore
    signing_key: Any
    nonce_secret: bytes

    def token(self, issuer: str, jkt: str) -> str:
        now = int(time.time())
        claims = {
            "iss": issuer,
            "aud": AUDIENCE,
            "sub": "fleet-user",
            "iat": now,
            "exp": now + 600,
            "cnf": {"jkt": jkt},
        }
        return mint(self.signing_key, claims, alg="ES256", kid="k1")

    def new_key(self) -> str:
        """A valid API key that no process has verified yet."""
        return self.store.create("svc", ["items:read"], subject="svc").key


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    directory = tmp_path_factory.mktemp("fleet")
    redis = RedisServer(directory)
    redis.start()
    signing_key = new_key("ES256")
    nonce_secret = bytes(range(32))  # fixed: the processes need only agree on it
    db = directory / "keys.db"
    store = SQLiteKeyStore(db)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLEET_REDIS": redis.url,
        "FLEET_NAMESPACE": "fleet",
        "FLEET_DB": str(db),
        "FLEET_JWK": json.dumps(public_jwk(signing_key, "k1", "ES256")),
        "FLEET_NONCE_SECRET": nonce_secret.hex(),
        "FLEET_LIMIT": f"{LIMIT}/{WINDOW} seconds",
        "FLEET_FAIL": "closed",
    }
    one = ServerProcess("one", uvicorn, env)
    two = ServerProcess("two", uvicorn, env)
    spare = ServerProcess("spare", uvicorn, {**env, "FLEET_FAIL": "open"})
    wsgi = ServerProcess("gunicorn", gunicorn, env)
    servers = [one, two, spare, wsgi]
    try:
        start_all(servers, directory)
        yield Fleet(redis, one, two, spare, wsgi, store, signing_key, nonce_secret)
    finally:
        for s in servers:
            s.stop()
        redis.stop()


@pytest.fixture
def fleet_up(fleet: Fleet) -> Fleet:
    if fleet.redis.proc is None:  # a test stopped it
        fleet.redis.restart()
    return fleet


@pytest.fixture
def client() -> Iterator[httpx2.Client]:
    with httpx2.Client(timeout=10) as c:
        yield c


_ADDRESSES = (f"198.51.100.{i}" for i in itertools.count(1))


def get(
    client: httpx2.Client,
    server: ServerProcess,
    *,
    key: str | None = None,
    token: str | None = None,
    proof: str | None = None,
    address: str = "203.0.113.1",
) -> httpx2.Response:
    headers = {"Host": API_HOST, "X-Forwarded-For": address}
    if key is not None:
        headers["X-API-Key"] = key
    if token is not None:
        headers["Authorization"] = f"DPoP {token}"
    if proof is not None:
        headers["DPoP"] = proof
    return client.get(server.url + "/me", headers=headers)


def worker(resp: httpx2.Response) -> int:
    return int(resp.headers["x-worker"])


def assert_throttled(resp: httpx2.Response) -> None:
    assert resp.status_code == 429, (resp.status_code, resp.text)
    assert 1 <= int(resp.headers["retry-after"]) <= WINDOW
    assert "www-authenticate" not in resp.headers
    assert resp.json()["error"] == "too_many_requests"


def assert_unavailable(resp: httpx2.Response) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.text)
    assert resp.headers["retry-after"] == "5"
    assert resp.json()["error"] == "temporarily_unavailable"


# -- DPoP ---------------------------------------------------------------------------------


def test_a_proof_accepted_by_one_process_is_a_replay_at_another(
    fleet_up: Fleet, client: httpx2.Client
) -> None:
    key = DPoPKey()
    token = fleet_up.token(PLAIN_ISSUER, key.jkt)
    proof = key.proof("GET", ME, token)
    first = get(client, fleet_up.one, token=token, proof=proof)
    assert first.status_code == 200, first.text
    assert first.json() == {"subject": "fleet-user", "method": "jwt"}

    replayed = get(client, fleet_up.two, token=token, proof=proof)
    assert worker(replayed) != worker(first)  # another OS process
    assert replayed.status_code == 401
    # The DPoP challenge (after the API key one: this app takes both) names the error.
    dpop_challenge = replayed.headers["www-authenticate"].split("DPoP ", 1)[1]
    assert 'error="invalid_dpop_proof"' in dpop_challenge
    assert replayed.json() == {
        "error": "invalid_dpop_proof",
        "error_description": "DPoP proof replayed",
    }
    assert get(client, fleet_up.one, token=token, proof=proof).status_code == 401

    # A fresh proof passes on the second process, and is then spent for the first.
    fresh = key.proof("GET", ME, token)
    assert get(client, fleet_up.two, token=token, proof=fresh).status_code == 200
    assert get(client, fleet_up.one, token=token, proof=fresh).status_code == 401


def test_a_nonce_issued_by_one_process_is_accepted_by_another(
    fleet_up: Fleet, client: httpx2.Client
) -> None:
    key = DPoPKey()
    token = fleet_up.token(NONCE_ISSUER, key.jkt)
    for issuer, checker in ((fleet_up.one, fleet_up.two), (fleet_up.two, fleet_up.one)):
        asked = get(client, issuer, token=token, proof=key.proof("GET", ME, token))
        assert asked.status_code == 401
        assert 'error="use_dpop_nonce"' in asked.headers["www-authenticate"]
        nonce = asked.headers["dpop-nonce"]
        used = get(client, checker, token=token, proof=key.proof("GET", ME, token, nonce=nonce))
        assert used.status_code == 200, used.text
        assert worker(used) != worker(asked)
    # A nonce no process issued is refused, with a good one to use instead.
    forged = get(client, fleet_up.two, token=token, proof=key.proof("GET", ME, token, nonce="x"))
    assert forged.status_code == 401
    assert 'error="use_dpop_nonce"' in forged.headers["www-authenticate"]
    assert forged.headers["dpop-nonce"] not in ("", "x")


# -- throttling ---------------------------------------------------------------------------


def test_failures_sent_to_two_processes_add_up(fleet_up: Fleet, client: httpx2.Client) -> None:
    one, two = fleet_up.one, fleet_up.two
    cached = fleet_up.new_key()
    for server in (one, two):  # verified (and cached) by both before the attack
        assert get(client, server, key=cached, address=next(_ADDRESSES)).status_code == 200
    attacker = next(_ADDRESSES)
    bad = altered(fleet_up.new_key())
    answered = set()
    for server in (one, two) * (LIMIT // 2):  # LIMIT failures in all, half each
        resp = get(client, server, key=bad, address=attacker)
        assert resp.status_code == 401, resp.text
        answered.add(worker(resp))
    assert len(answered) == 2

    # Over the shared limit: both refuse that address, even a valid key neither verified.
    unverified = fleet_up.new_key()
    for server in (one, two):
        assert_throttled(get(client, server, key=bad, address=attacker))
        assert_throttled(get(client, server, key=unverified, address=attacker))
    # A key each verified already is no guess, from any address; other addresses are free.
    for server in (one, two):
        assert get(client, server, key=cached, address=attacker).status_code == 200
        assert get(client, server, key=cached, address=next(_ADDRESSES)).status_code == 200
        assert get(client, server, key=bad, address=next(_ADDRESSES)).status_code == 401
    # A third process that never saw this address refuses it from its own first failure.
    assert_throttled(get(client, fleet_up.spare, key=bad, address=attacker))


# -- Redis down ---------------------------------------------------------------------------


def test_redis_killed_and_restarted_under_running_processes(
    fleet_up: Fleet, client: httpx2.Client
) -> None:
    one, two, spare = fleet_up.one, fleet_up.two, fleet_up.spare
    key = DPoPKey()
    token = fleet_up.token(PLAIN_ISSUER, key.jkt)
    suspect = next(_ADDRESSES)
    bad = altered(fleet_up.new_key())
    for server in (one, two, spare):
        assert (
            get(client, server, token=token, proof=key.proof("GET", ME, token)).status_code == 200
        )
        # One failure each: that address now needs the throttle's check.
        assert get(client, server, key=bad, address=suspect).status_code == 401

    idle_suspect = next(_ADDRESSES)

    def dpop_then_throttle_check() -> list[httpx2.Response]:
        wsgi = fleet_up.wsgi
        return [
            get(client, wsgi, token=token, proof=key.proof("GET", ME, token)),
            get(client, wsgi, key=bad, address=idle_suspect),  # then counted, and checked
        ]

    # Both gunicorn workers talk to Redis, then stay idle through the whole outage.
    before = on_each_gunicorn_worker(fleet_up.wsgi.port, dpop_then_throttle_check)
    assert [r.status_code for r in before] == [200, 401, 200, 401]

    fleet_up.redis.stop()  # SIGKILL, under running app processes
    try:
        for _ in range(3):  # DPoP fails closed on every process, whatever `fail=` says
            for server in (one, two, spare):
                assert_unavailable(
                    get(client, server, token=token, proof=key.proof("GET", ME, token))
                )
        # The throttle's check for the suspect address: fail="closed" refuses with 503 ...
        for server in (one, two):
            assert_unavailable(get(client, server, key=fleet_up.new_key(), address=suspect))
        # ... fail="open" lets a good key through, and a bad one is still a 401.
        assert get(client, spare, key=fleet_up.new_key(), address=suspect).status_code == 200
        assert get(client, spare, key=bad, address=suspect).status_code == 401
        # An address without recent failures needs no check: not held up by the outage.
        for server in (one, two):
            resp = get(client, server, key=fleet_up.new_key(), address=next(_ADDRESSES))
            assert resp.status_code == 200
    finally:
        fleet_up.redis.restart()  # the same port, empty: no persistence

    # The same processes, no restart: DPoP and the throttle work again.
    for server in (one, two, spare):
        proof = key.proof("GET", ME, token)
        assert get(client, server, token=token, proof=proof).status_code == 200, server.name
        assert get(client, server, key=fleet_up.new_key(), address=suspect).status_code == 200
    assert get(client, two, token=token, proof=proof).status_code == 401  # replay recorded again
    # A worker idle through the outage: its first requests after it find Redis again (the
    # connections it held died with the old server): no 503, the failure counted (a 401).
    after = on_each_gunicorn_worker(fleet_up.wsgi.port, dpop_then_throttle_check)
    assert [r.status_code for r in after] == [200, 401, 200, 401], [r.text for r in after]


# -- gunicorn -w 2 (WSGI) -----------------------------------------------------------------


class Hold:
    """A `/hold` request that keeps one sync gunicorn worker busy until `release`: its
    `100 Continue` says a worker took it, and that worker waits for the body. While it
    holds, the other worker gets every request: which process answers is not left to
    chance."""

    def __init__(self, port: int) -> None:
        self.conn = socket.create_connection((HOST, port), timeout=10)
        self.conn.sendall(
            b"POST /hold HTTP/1.1\r\nHost: api.fleet.test\r\nContent-Length: 1\r\n"
            b"Expect: 100-continue\r\nConnection: close\r\n\r\n"
        )
        head = self._read(lambda data: b"\r\n\r\n" in data)
        assert head.startswith(b"HTTP/1.1 100 "), head

    def _read(self, done: Callable[[bytes], bool]) -> bytes:
        data = b""
        for _ in range(10_000):  # bounded
            chunk = self.conn.recv(65536)
            data += chunk
            if not chunk or done(data):
                return data
        raise AssertionError(data)

    def release(self) -> int:
        """Send the body; the pid of the worker that was held."""
        self.conn.sendall(b"x")
        head = self._read(lambda data: False).partition(b"\r\n\r\n")[0].decode("latin-1")
        self.conn.close()
        assert head.startswith("HTTP/1.1 200 "), head
        (pid,) = [
            line.split(":", 1)[1]
            for line in head.split("\r\n")
            if line.lower().startswith("x-worker:")
        ]
        return int(pid)


def on_each_gunicorn_worker(
    port: int, send: Callable[[], list[httpx2.Response]]
) -> list[httpx2.Response]:
    """`send` to one worker while the other is held, then to the other: both answer."""
    first = Hold(port)
    answers = send()
    (y,) = {worker(r) for r in answers}
    second = Hold(port)
    x = first.release()
    more = send()
    assert {worker(r) for r in more} == {x} != {y}
    assert second.release() == y
    return answers + more


def test_gunicorn_workers_share_the_count(fleet_up: Fleet, client: httpx2.Client) -> None:
    wsgi = fleet_up.wsgi
    attacker = next(_ADDRESSES)
    bad = altered(fleet_up.new_key())
    cached = fleet_up.new_key()

    def fail_half(expected_worker: int | None) -> int:
        """Verify `cached` on the free worker, then send it half the limit's failures."""
        ok = get(client, wsgi, key=cached, address=next(_ADDRESSES))
        assert ok.status_code == 200, ok.text
        assert expected_worker in (None, worker(ok))
        for _ in range(LIMIT // 2):
            resp = get(client, wsgi, key=bad, address=attacker)
            assert resp.status_code == 401, resp.text
            assert worker(resp) == worker(ok)
        return worker(ok)

    def refuses(expected_worker: int) -> None:
        for key in (bad, fleet_up.new_key()):
            resp = get(client, wsgi, key=key, address=attacker)
            assert worker(resp) == expected_worker
            assert_throttled(resp)
        assert get(client, wsgi, key=cached, address=attacker).status_code == 200

    first = Hold(wsgi.port)  # worker X busy
    y = fail_half(None)  # half the failures on worker Y
    second = Hold(wsgi.port)  # Y busy
    x = first.release()
    assert x != y
    fail_half(x)  # the other half on X: the limit is reached in total
    refuses(x)
    third = Hold(wsgi.port)  # X busy again
    assert second.release() == y
    refuses(y)  # Y counted only its own half, and refuses all the same
    assert third.release() == x


def test_a_proof_accepted_by_one_gunicorn_worker_is_a_replay_at_the_other(
    fleet_up: Fleet, client: httpx2.Client
) -> None:
    wsgi = fleet_up.wsgi
    key = DPoPKey()
    token = fleet_up.token(PLAIN_ISSUER, key.jkt)
    proof = key.proof("GET", ME, token)
    first = Hold(wsgi.port)  # worker X busy: Y accepts the proof
    accepted = get(client, wsgi, token=token, proof=proof)
    assert accepted.status_code == 200, accepted.text
    y = worker(accepted)
    second = Hold(wsgi.port)  # Y busy
    x = first.release()
    replayed = get(client, wsgi, token=token, proof=proof)  # to X
    assert worker(replayed) == x != y
    assert replayed.status_code == 401
    assert replayed.json()["error_description"] == "DPoP proof replayed"
    fresh = get(client, wsgi, token=token, proof=key.proof("GET", ME, token))
    assert (fresh.status_code, worker(fresh)) == (200, x)
    assert second.release() == y

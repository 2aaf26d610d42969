"""`python -m benchmarks.propagation`: how fast a revocation reaches every worker.

A real `redis-server` and a real `uvicorn --workers 4` (or `gunicorn --preload -w N`) on
127.0.0.1, serving an app behind `APIKeyAuth(RedisKeyStore(...), cache_ttl=3600)`: only
the store's announcements can explain a refusal within the hour. Client threads keep the
workers busy with keys they have cached; the runner revokes one key at a time from its own
store (as the CLI or an admin service would) and measures, per revocation:

- delivery: when each worker's cache was told (its listener stamps `time.time()`; the
  runner asks every worker through the public `/_heard` path), from just before the
  revoking call;
- observed: from that same instant, the start of the last request any worker answered
  200 with the revoked key (0 when none did), i.e. how long a revoked key was still
  honoured under load.

Every loop is bounded in count and time; the servers stop at the end. Also used by
tests/test_fleet_workers.py, which asserts behaviour, never these timings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from .redis_server import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
READY_SECONDS = 60.0
NAMESPACE = "propagation"

# -- the app every worker builds (from environment variables, as a fleet does) ---------------

_heard: dict[str, float] = {}
_heard_lock = threading.Lock()


def _on_change(key_id: str | None) -> None:
    with _heard_lock:
        if len(_heard) >= 10_000:
            _heard.clear()  # bounded; the runner asks within seconds
        _heard[key_id or "*"] = time.time()


def _store() -> Any:
    from asgi_auth.keys import RedisKeyStore

    store = RedisKeyStore(
        os.environ["PROP_REDIS"],
        namespace=os.environ.get("PROP_NAMESPACE", NAMESPACE),
        reconcile_interval=float(os.environ.get("PROP_RECONCILE", "3600")),
    )
    store.listen(_on_change)  # a module-level function: the weak reference stays alive
    return store


def _heard_body(query: str) -> bytes:
    key_id = query.partition("key=")[2].partition("&")[0]
    with _heard_lock:
        at = _heard.get(key_id)
        everything = _heard.get("*")
    return json.dumps({"pid": os.getpid(), "at": at, "all_at": everything}).encode()


def asgi_app() -> Any:
    """For `uvicorn --factory benchmarks.propagation:asgi_app`."""
    from asgi_auth import APIKeyAuth, AuthMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                done = message["type"] == "lifespan.shutdown"
                await send({"type": message["type"] + ".complete"})
                if done:
                    return
        if scope["path"] == "/_heard":
            body = _heard_body(scope["query_string"].decode())
        else:
            body = json.dumps({"pid": os.getpid(), "subject": scope["auth"].subject}).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    auth = APIKeyAuth(_store(), cache_ttl=3600, store_timeout=1.0)
    gate = AuthMiddleware(app, authenticators=[auth], public_paths=["/health", "/_heard"])

    async def tagged(scope: Any, receive: Any, send: Any) -> None:
        async def tag(message: Any) -> None:
            if message["type"] == "http.response.start":
                pid = (b"x-worker", b"%d" % os.getpid())
                message = {**message, "headers": [*message.get("headers", []), pid]}
            await send(message)

        await gate(scope, receive, tag if scope["type"] == "http" else send)

    return tagged


def wsgi_app() -> Any:
    """For `gunicorn --preload 'benchmarks.propagation:wsgi_app()'`: built in the arbiter,
    before the fork, so each worker's subscriber starts after it."""
    from asgi_auth import APIKeyAuth
    from wsgi_auth import AuthMiddleware

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == "/_heard":
            body = _heard_body(environ.get("QUERY_STRING", ""))
        else:
            ident = environ["wsgi_auth.identity"]
            body = json.dumps({"pid": os.getpid(), "subject": ident.subject}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]

    auth = APIKeyAuth(_store(), cache_ttl=3600, store_timeout=1.0)
    gate = AuthMiddleware(app, authenticators=[auth], public_paths=["/health", "/_heard"])

    def tagged(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        def tag(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            return start_response(status, [*headers, ("X-Worker", str(os.getpid()))], *exc)

        return gate(environ, tag)

    return tagged


# -- the servers ------------------------------------------------------------------------------


def uvicorn_argv(port: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", "--factory", "benchmarks.propagation:asgi_app"),
        *("--host", HOST, "--port", str(port), "--workers", str(workers)),
        *("--no-access-log", "--log-level", "warning"),
    ]


def gunicorn_argv(port: int, workers: int) -> list[str]:
    return [
        *(sys.executable, "-m", "gunicorn", "--preload", "--workers", str(workers)),
        *("--worker-class", "sync", "--bind", f"{HOST}:{port}", "--log-level", "warning"),
        *("--graceful-timeout", "5", "benchmarks.propagation:wsgi_app()"),
    ]


def fresh_get(url: str, **kw: Any) -> httpx2.Response:
    """One request on a new connection: the kernel hands it to any worker."""
    with httpx2.Client(timeout=5) as client:
        return client.get(url, **kw)


@dataclass
class Workers:
    """A multi-worker server on a free 127.0.0.1 port, ready once every worker answered."""

    server: str  # "uvicorn" or "gunicorn"
    count: int
    env: dict[str, str]
    directory: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    pids: set[int] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        argv = uvicorn_argv if self.server == "uvicorn" else gunicorn_argv
        for _ in range(5):  # another port when something took this one meanwhile
            self.port = free_port()
            log = self.directory / f"{self.server}-{self.port}.log"
            with log.open("wb") as out:
                self.proc = subprocess.Popen(
                    argv(self.port, self.count),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=ROOT,
                    env={**self.env, "PYTHONPATH": str(ROOT)},
                    start_new_session=True,
                )
            if self._wait_ready(log):
                return
            self.stop()
            if "address already in use" not in log.read_text(errors="replace").lower():
                raise RuntimeError(f"{self.server} exited: {log.read_text()[-2000:]}")
        raise RuntimeError(f"could not start {self.server}")

    def _wait_ready(self, log: Path) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:  # bounded: time and, through it, count
            if self.proc.poll() is not None:
                return False
            try:
                reply = fresh_get(self.url + "/health")
                if reply.status_code == 200:
                    self.pids.add(int(reply.headers["x-worker"]))
                    if len(self.pids) >= self.count:
                        return True
            except httpx2.TransportError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.server}: not every worker answered: {log.read_text()[-2000:]}")

    def each_worker(self, path: str, **kw: Any) -> dict[int, httpx2.Response]:
        """One answer from every worker, on fresh connections (bounded tries)."""
        answers: dict[int, httpx2.Response] = {}
        deadline = time.monotonic() + 30
        for _ in range(5000):
            reply = fresh_get(self.url + path, **kw)
            answers[int(reply.headers["x-worker"])] = reply
            if len(answers) >= self.count or time.monotonic() > deadline:
                break
        return answers

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.proc = None


class Load:
    """Client threads sending requests with the current keys (new connection each, so
    every worker gets some), recording `(start, key, pid, status)`. Bounded: `max_requests`
    in all and `max_seconds`; `stop()` ends it sooner."""

    def __init__(
        self, url: str, keys: list[str], threads: int = 6, max_requests: int = 200_000
    ) -> None:
        self.url = url
        self.keys = list(keys)
        self.records: list[tuple[float, str, int, int]] = []
        self._left = max_requests
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def __enter__(self) -> Load:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _run(self, max_seconds: float = 600.0) -> None:
        deadline = time.monotonic() + max_seconds
        limits = httpx2.Limits(max_keepalive_connections=0)
        i = 0
        with httpx2.Client(timeout=10, limits=limits) as client:
            while not self._stop.is_set() and time.monotonic() < deadline:
                with self._lock:
                    if self._left <= 0:
                        return
                    self._left -= 1
                    keys = self.keys
                key = keys[i % len(keys)]
                i += 1
                start = time.time()
                try:
                    reply = client.get(self.url + "/", headers={"X-API-Key": key})
                    pid, status = int(reply.headers.get("x-worker", 0)), reply.status_code
                except httpx2.TransportError:
                    pid, status = 0, 0
                with self._lock:
                    self.records.append((start, key, pid, status))


@contextmanager
def cluster(server: str = "uvicorn", workers: int = 4, **env: str) -> Iterator[tuple[Any, Any]]:
    """A redis-server and a multi-worker server sharing it: yields `(redis, workers)`."""
    with tempfile.TemporaryDirectory(prefix="authgate-propagation-") as tmp:
        directory = Path(tmp)
        redis = RedisServer(directory)
        redis.start()
        pool = Workers(server, workers, {**os.environ, "PROP_REDIS": redis.url, **env}, directory)
        try:
            pool.start()
            yield redis, pool
        finally:
            pool.stop()
            redis.stop()


def _q(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(revocations: int = 30, workers: int = 4, threads: int = 6) -> dict[str, Any]:
    """Revoke `revocations` keys one at a time under load; delivery and observed times."""
    from asgi_auth.keys import RedisKeyStore

    delivery: list[float] = []
    observed: list[float] = []
    with cluster("uvicorn", workers) as (redis, pool):
        admin = RedisKeyStore(redis.url, namespace=NAMESPACE, listen=False)
        keys = [admin.create(f"k{i}") for i in range(revocations + 4)]
        steady = [k.key for k in keys[revocations:]]  # never revoked: load only
        with Load(pool.url, steady, threads=threads) as load:
            for victim in keys[:revocations]:
                load.keys = [*steady, victim.key]
                # Every worker verified (and cached) the victim before it is revoked.
                pool.each_worker("/", headers={"X-API-Key": victim.key})
                warm = len(load.records)
                while len(load.records) < warm + 40:  # bounded below by the load's own cap
                    time.sleep(0.005)
                t0 = time.time()
                admin.revoke(victim.record.key_id)
                heard = pool.each_worker(f"/_heard?key={victim.record.key_id}")
                stamps = [r.json()["at"] for r in heard.values()]
                if len(heard) < workers or None in stamps:
                    raise RuntimeError(f"not every worker heard {victim.record.key_id}")
                delivery.extend(at - t0 for at in stamps)
                settle = len(load.records)
                while len(load.records) < settle + 40:
                    time.sleep(0.005)
                stale = [
                    s
                    for s, k, _, st in list(load.records)
                    if k == victim.key and s >= t0
                    if st == 200
                ]
                observed.append(max(stale) - t0 if stale else 0.0)
            load.stop()
            statuses = {st for *_, st in load.records}
        admin.close()
    ms = [d * 1000 for d in delivery]
    obs = [o * 1000 for o in observed]
    return {
        "workers": workers,
        "revocations": revocations,
        "requests": len(load.records),
        "statuses": sorted(statuses),
        "delivery_ms": {"p50": _q(ms, 0.5), "p99": _q(ms, 0.99), "max": max(ms)},
        "observed_ms": {"p50": _q(obs, 0.5), "p99": _q(obs, 0.99), "max": max(obs)},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, "
        f"CPython {platform.python_version()}",
    }


def markdown(result: dict[str, Any]) -> str:
    d, o = result["delivery_ms"], result["observed_ms"]
    return "\n".join(
        [
            f"Revocation propagation: {result['revocations']} revocations, "
            f"`uvicorn --workers {result['workers']}` under load "
            f"({result['requests']} requests; statuses seen {result['statuses']}), "
            f"{result['machine']}",
            "",
            "| ms from the revoking call | p50 | p99 | max |",
            "|---|---:|---:|---:|",
            f"| delivered to each worker's caches | {d['p50']:.2f} | {d['p99']:.2f} | "
            f"{d['max']:.2f} |",
            f"| last 200 with the revoked key (any worker) | {o['p50']:.2f} | {o['p99']:.2f} | "
            f"{o['max']:.2f} |",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.propagation", description=__doc__)
    p.add_argument("--revocations", type=int, default=30)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--threads", type=int, default=6, help="load client threads")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    result = measure(args.revocations, args.workers, args.threads)
    print(markdown(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    d = result["delivery_ms"]
    return 0 if d["p99"] < 1000 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""End to end: requests/second of real HTTP servers on 127.0.0.1, with and without authgate.

`python -m benchmarks.e2e [--quick] [--duration S] [--rounds N] [--json PATH]`. Each app of
`benchmarks.e2e_apps` runs in its own server process (uvicorn, one worker; gunicorn, one
sync worker), all started up front. Before anything is measured, every protected app must
answer 200 with its credential and 401 without it, so no no-op is ever measured. Then
each round runs a bounded load against every app, the apps of one comparison group back
to back (in an order that rotates from round to round), and an app's req/s is its median
over rounds; its ratio to bare is the median over rounds of its req/s divided by that of
the bare app of its group in the same round: the machine's speed drifts, and a short
round sees one speed.

The load comes from `wrk` when it is on PATH (`bash scripts/bench-setup.sh` installs it),
else from a bounded asyncio client in this process; the output says which ran. Any
non-2xx answer or socket error fails the run. The machine's cores are shared by the
server and the load generator; nothing is pinned.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter
from typing import Any

import jwt as pyjwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .e2e_apps import CONFIG_ENV, PATH
from .harness import machine

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
ISSUER = "https://idp.bench.example"
AUDIENCE = "api"
CONNECTIONS = 16
TARGET_RATIO = 0.95  # the issue's target: a cached JWT under uvicorn keeps 95 % of req/s
STARTUP_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
BUSY = 0.2  # CPU share used by others before a run above which the output warns

Progress = Callable[[str], None] | None


class E2EError(RuntimeError):
    """A server did not start, did not answer as it must, or the load saw failures."""


# -- what is served ----------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    """One served app. `group` names the comparison: its app named "bare" is the baseline."""

    id: str
    server: str  # "uvicorn" or "gunicorn"
    group: str
    name: str
    app: str  # module:attribute, imported by the server
    credential: str | None = None  # "jwt_es256", "jwt_rs256", "api_key"

    @property
    def bare(self) -> bool:
        return self.credential is None


BARE = "bare"
JWT_CACHED = "authgate JWT ES256, cached"
KEY_CACHED = "authgate API key, cached"
RECIPE = "Starlette AuthenticationMiddleware + PyJWT RS256"
MODULE = "benchmarks.e2e_apps"

APPS: tuple[App, ...] = (
    App("asgi-bare", "uvicorn", "pure ASGI", BARE, f"{MODULE}:bare_asgi"),
    App("asgi-jwt", "uvicorn", "pure ASGI", JWT_CACHED, f"{MODULE}:jwt_asgi", "jwt_es256"),
    App("asgi-key", "uvicorn", "pure ASGI", KEY_CACHED, f"{MODULE}:key_asgi", "api_key"),
    App("starlette-bare", "uvicorn", "Starlette", BARE, f"{MODULE}:bare_starlette"),
    App(
        "starlette-pyjwt",
        "uvicorn",
        "Starlette",
        RECIPE,
        f"{MODULE}:pyjwt_starlette",
        "jwt_rs256",
    ),
    App(
        "starlette-jwt", "uvicorn", "Starlette", JWT_CACHED, f"{MODULE}:jwt_starlette", "jwt_es256"
    ),
    App("flask-bare", "gunicorn", "Flask", BARE, f"{MODULE}:bare_flask"),
    App("flask-key", "gunicorn", "Flask", KEY_CACHED, f"{MODULE}:key_flask", "api_key"),
    App("flask-jwt", "gunicorn", "Flask", JWT_CACHED, f"{MODULE}:jwt_flask", "jwt_es256"),
)


def select(only: Sequence[str] | None) -> list[App]:
    """The apps whose id is in `only` (all if None), plus the bare app of each group."""
    if not only:
        return list(APPS)
    unknown = set(only) - {a.id for a in APPS}
    if unknown:
        raise ValueError(f"unknown app ids {sorted(unknown)}; known: {[a.id for a in APPS]}")
    groups = {a.group for a in APPS if a.id in only}
    return [a for a in APPS if a.id in only or (a.bare and a.group in groups)]


class Credentials:
    """Fresh keys per run: signing keys whose public halves the servers get, one token per
    algorithm, one API key. Written to a JSON file that `e2e_apps` reads."""

    def __init__(self) -> None:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 4 * 3600,
            "scope": "items:read",
        }
        es = ec.generate_private_key(ec.SECP256R1())
        rs = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tokens = {
            "jwt_es256": pyjwt.encode(claims, es, algorithm="ES256"),
            "jwt_rs256": pyjwt.encode(claims, rs, algorithm="RS256"),
        }
        from asgi_auth.keys import MemoryKeyStore

        # A well-formed key (prefix, id, secret, checksum); the servers store its hash.
        self.api_key = MemoryKeyStore().create("bench", ["items:read"]).key
        self.config = {
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "es256_public_pem": _pem(es.public_key()),
            "rs256_public_pem": _pem(rs.public_key()),
            "api_key": self.api_key,
        }

    def headers(self, credential: str | None) -> dict[str, str]:
        if credential is None:
            return {}
        if credential == "api_key":
            return {"X-API-Key": self.api_key}
        return {"Authorization": f"Bearer {self.tokens[credential]}"}

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.config))
        path.chmod(0o600)


def _pem(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# -- servers -----------------------------------------------------------------------------


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@dataclass(frozen=True)
class ServerSetup:
    """How the servers run: uvicorn's best available loop and parser, gunicorn's sync worker."""

    uvicorn_loop: str
    uvicorn_http: str

    @classmethod
    def detect(cls) -> ServerSetup:
        return cls(
            uvicorn_loop="uvloop" if _installed("uvloop") else "asyncio",
            uvicorn_http="httptools" if _installed("httptools") else "h11",
        )

    def command(self, app: App, fd: int) -> list[str]:
        """The server's command line; it serves on the listening socket `fd` it inherits."""
        if app.server == "uvicorn":
            return [
                sys.executable,
                "-m",
                "uvicorn",
                app.app,
                "--fd",
                str(fd),
                "--workers",
                "1",
                "--loop",
                self.uvicorn_loop,
                "--http",
                self.uvicorn_http,
                "--lifespan",
                "off",
                "--no-access-log",
                "--log-level",
                "warning",
            ]
        if not _installed("gunicorn"):
            raise E2EError("gunicorn is not installed (pip install gunicorn)")
        return [
            sys.executable,
            "-m",
            "gunicorn",
            "--workers",
            "1",
            "--worker-class",
            "sync",
            "--bind",
            f"fd://{fd}",
            "--log-level",
            "warning",
            app.app,
        ]

    def describe(self) -> dict[str, str]:
        return {
            "uvicorn": f"uvicorn {_version('uvicorn')}, 1 worker, --loop {self.uvicorn_loop}, "
            f"--http {self.uvicorn_http}, access log off",
            "gunicorn": f"gunicorn {_version('gunicorn')}, 1 sync worker (closes the "
            "connection after each response: no keep-alive), access log off",
        }


def listener() -> socket.socket:
    """A socket listening on a free port of HOST, for a server to inherit: bound here and
    never let go, no other process can take the port before the server serves on it (or
    answer in its place while it starts)."""
    sock = socket.socket()
    try:
        sock.bind((HOST, 0))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


class Server:
    """One server subprocess in its own session, so that stopping it stops its workers."""

    def __init__(self, app: App, setup: ServerSetup, env: dict[str, str], logdir: Path) -> None:
        self.app = app
        self.log = logdir / f"{app.id}.log"
        with listener() as sock, self.log.open("wb") as log:
            self.port = int(sock.getsockname()[1])
            self.url = f"http://{HOST}:{self.port}{PATH}"
            # The child gets its own copy of the socket; ours closes once it has started.
            self.proc = subprocess.Popen(
                setup.command(app, sock.fileno()),
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                pass_fds=[sock.fileno()],
            )

    def wait_ready(self, deadline: float) -> None:
        """Poll until the server answers anything (bounded by `deadline`)."""
        while True:
            if self.proc.poll() is not None:
                raise E2EError(f"{self.app.id}: the server exited\n{self.output()}")
            try:
                status(self.url, {}, timeout=1.0)
                return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise E2EError(f"{self.app.id}: no answer within {STARTUP_TIMEOUT_S} s")
            time.sleep(0.05)

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after a bounded wait."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT_S)


def server_env(config: Path) -> dict[str, str]:
    """The runner's environment, plus the config file and this checkout on the path."""
    env = {**os.environ, CONFIG_ENV: str(config)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


@contextlib.contextmanager
def serving(apps: Sequence[App], setup: ServerSetup, env: dict[str, str]) -> Iterator[list[Server]]:
    """Start every server, wait until each answers; always stop them all (errors and
    KeyboardInterrupt included)."""
    servers: list[Server] = []
    with tempfile.TemporaryDirectory(prefix="authgate-e2e-logs-") as logdir:
        try:
            for app in apps:
                servers.append(Server(app, setup, env, Path(logdir)))
            deadline = time.monotonic() + STARTUP_TIMEOUT_S
            for s in servers:
                s.wait_ready(deadline)
            yield servers
        finally:
            for s in servers:  # all at once: stopping them one by one waits for each
                if s.proc.poll() is None:
                    s.signal(signal.SIGTERM)
            for s in servers:
                s.stop()


def status(url: str, headers: dict[str, str], *, timeout: float = 5.0) -> int:
    """One GET; the response status."""
    host_port = url.split("/")[2]
    host, port = host_port.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        conn.request("GET", PATH, headers=headers)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def check(server: Server, headers: dict[str, str]) -> dict[str, int]:
    """200 with the credential, and for a protected app 401 without it."""
    got = {"with_credential": status(server.url, headers)}
    if got["with_credential"] != 200:
        raise E2EError(f"{server.app.id}: expected 200 with the credential, got {got}")
    if not server.app.bare:
        got["without_credential"] = status(server.url, {})
        if got["without_credential"] != 401:
            raise E2EError(f"{server.app.id}: expected 401 without the credential, got {got}")
    return got


# -- load generators ---------------------------------------------------------------------


@dataclass(frozen=True)
class Load:
    """What one bounded load run saw."""

    requests: int
    seconds: float
    rps: float
    non_2xx: int
    socket_errors: int
    p50_ms: float | None

    @property
    def failed(self) -> str | None:
        """Why this run does not count (non-2xx, socket errors, nothing done), or None."""
        if self.non_2xx or self.socket_errors or self.requests == 0:
            return (
                f"{self.requests} requests, {self.non_2xx} non-2xx, "
                f"{self.socket_errors} socket errors"
            )
        return None


class Generator:
    name = ""

    def run(self, url: str, headers: dict[str, str], duration_s: float) -> Load:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def effective_duration(self, duration_s: float) -> float:
        return duration_s


_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def parse_wrk(out: str) -> Load:
    """Requests/sec, the request count, the p50 latency (with --latency), non-2xx answers
    (wrk counts statuses > 399) and socket errors from wrk's report."""
    rps = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", out, re.M)
    if rps is None or total is None:
        raise E2EError(f"could not read wrk's report:\n{out}")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m|h)", out, re.M)
    return Load(
        requests=int(total.group(1)),
        seconds=float(total.group(2)) * _TIME_UNITS[total.group(3)] / 1e3,
        rps=float(rps.group(1)),
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(x) for x in sock.groups()) if sock else 0,
        p50_ms=float(p50.group(1)) * _TIME_UNITS[p50.group(2)] if p50 else None,
    )


class Wrk(Generator):
    """`wrk -t1 -cN -dS --latency`. wrk takes whole seconds only: shorter runs take 1 s."""

    name = "wrk"

    def __init__(self, connections: int = CONNECTIONS, path: str | None = None) -> None:
        found = path or shutil.which("wrk")
        if found is None:
            raise E2EError("wrk is not on PATH (bash scripts/bench-setup.sh installs it)")
        self.path = found
        self.connections = connections

    def effective_duration(self, duration_s: float) -> float:
        return float(max(1, round(duration_s)))

    def run(self, url: str, headers: dict[str, str], duration_s: float) -> Load:
        seconds = int(self.effective_duration(duration_s))
        cmd = [
            self.path,
            "-t1",
            f"-c{self.connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            "--latency",
        ]
        for name, value in headers.items():
            cmd += ["-H", f"{name}: {value}"]
        cmd.append(url)
        # subprocess.run kills wrk if this times out or is interrupted.
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 30, check=False
        )
        if proc.returncode != 0:
            raise E2EError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
        return parse_wrk(proc.stdout)

    def describe(self) -> str:
        return f"wrk ({self.path}), 1 thread, {self.connections} keep-alive connections"


class PythonLoad(Generator):
    """A bounded asyncio client in this process: `connections` keep-alive connections,
    each sending the same GET back to back, until the time or the request budget runs
    out. Slower than wrk: on a fast server the client may saturate first, which
    understates the differences between apps."""

    name = "python"
    MAX_RPS = 100_000  # the request budget: this many per second of duration, at most

    def __init__(self, connections: int = CONNECTIONS) -> None:
        self.connections = connections

    def run(self, url: str, headers: dict[str, str], duration_s: float) -> Load:
        factory = None
        if _installed("uvloop"):  # a faster client: it saturates later
            factory = importlib.import_module("uvloop").new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(self._run(url, headers, duration_s))

    async def _run(self, url: str, headers: dict[str, str], duration_s: float) -> Load:
        host, port = url.split("/")[2].rsplit(":", 1)
        lines = [f"GET {PATH} HTTP/1.1", f"Host: {host}:{port}", "User-Agent: authgate-e2e"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        request = ("\r\n".join(lines) + "\r\n\r\n").encode()
        stats = _Stats(budget=max(1, int(self.MAX_RPS * duration_s)))
        t0 = perf_counter()
        deadline = t0 + duration_s
        conns = [
            _connection(host, int(port), request, deadline, stats) for _ in range(self.connections)
        ]
        try:
            # Each read waits for a server that may hang: the whole run is bounded too.
            await asyncio.wait_for(asyncio.gather(*conns), duration_s + 10.0)
        except TimeoutError:
            stats.errors += 1
        seconds = perf_counter() - t0
        done = len(stats.latencies)
        return Load(
            requests=done,
            seconds=seconds,
            rps=done / seconds,
            non_2xx=stats.non_2xx,
            socket_errors=stats.errors,
            p50_ms=statistics.median(stats.latencies) * 1e3 if stats.latencies else None,
        )

    def describe(self) -> str:
        loop = "uvloop" if _installed("uvloop") else "asyncio"
        return (
            f"Python client ({loop}) in the runner's process, {self.connections} keep-alive "
            "connections (slower than wrk: it may saturate before a fast server does, which "
            "understates the differences)"
        )


@dataclass
class _Stats:
    budget: int
    latencies: list[float] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0


async def _connection(host: str, port: int, request: bytes, deadline: float, stats: _Stats) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    try:
        while stats.budget > 0 and perf_counter() < deadline:
            stats.budget -= 1
            try:
                if writer is None or reader is None:
                    reader, writer = await asyncio.open_connection(host, port)
                t0 = perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                code, length, close = _parse_head(head)
                if length is None:  # no length: the body runs to the end of the connection
                    await reader.read()
                    close = True
                elif length:
                    await reader.readexactly(length)
                stats.latencies.append(perf_counter() - t0)
                if not 200 <= code < 300:
                    stats.non_2xx += 1
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
                stats.errors += 1
                close = True
            if close and writer is not None:
                writer.close()
                writer = reader = None
    finally:
        if writer is not None:
            writer.close()


def _parse_head(head: bytes) -> tuple[int, int | None, bool]:
    """The status, the Content-Length (None if absent) and whether the server closes."""
    lines = head.decode("latin-1").split("\r\n")
    version, code = lines[0].split(" ", 2)[:2]
    length: int | None = None
    close = version == "HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection":
            close = value.strip().lower() == "close"
        elif name == "transfer-encoding":
            raise ValueError("chunked responses are not supported")
    return int(code), length, close


def generator(kind: str = "auto", connections: int = CONNECTIONS) -> Generator:
    """ "wrk", "python", or "auto": wrk if it is on PATH, else the Python client."""
    if kind == "wrk" or (kind == "auto" and shutil.which("wrk")):
        return Wrk(connections)
    if kind in ("python", "auto"):
        return PythonLoad(connections)
    raise ValueError(f"unknown generator {kind!r}")


# -- the run -----------------------------------------------------------------------------


@dataclass
class Row:
    app: App
    checked: dict[str, int]
    loads: list[Load] = field(default_factory=list)  # one per round
    ratios: list[float] = field(default_factory=list)  # rps / bare rps, one per round

    @property
    def ratio(self) -> float | None:
        """The median over rounds of the ratio to the bare app of the same round."""
        return statistics.median(self.ratios) if self.ratios else None

    @property
    def ratio_spread(self) -> tuple[float, float] | None:
        """The quartiles of the per-round ratios: how far one round's figure can be off."""
        if len(self.ratios) < 2:
            return None
        q1, _, q3 = statistics.quantiles(self.ratios, n=4, method="inclusive")
        return q1, q3

    @property
    def rps(self) -> float:
        return statistics.median(x.rps for x in self.loads)

    @property
    def p50_ms(self) -> float | None:
        p50 = [x.p50_ms for x in self.loads if x.p50_ms is not None]
        return statistics.median(p50) if p50 else None

    @property
    def non_2xx(self) -> int:
        return sum(x.non_2xx for x in self.loads)

    def as_dict(self) -> dict[str, Any]:
        a = self.app
        return {
            "id": a.id,
            "server": a.server,
            "group": a.group,
            "app": a.name,
            "module": a.app,
            "rps_median": round(self.rps, 1),
            "ratio": None if self.ratio is None else round(self.ratio, 4),
            "ratio_quartiles": (
                None if self.ratio_spread is None else [round(x, 4) for x in self.ratio_spread]
            ),
            "p50_ms": None if self.p50_ms is None else round(self.p50_ms, 4),
            "non_2xx": self.non_2xx,
            "socket_errors": sum(x.socket_errors for x in self.loads),
            "requests": sum(x.requests for x in self.loads),
            "checked": self.checked,
            "rounds": [
                {
                    "rps": round(x.rps, 1),
                    "requests": x.requests,
                    "seconds": round(x.seconds, 3),
                    "p50_ms": x.p50_ms,
                    "ratio": round(self.ratios[i], 4) if self.ratios else None,
                }
                for i, x in enumerate(self.loads)
            ],
        }


@dataclass
class E2EReport:
    rows: list[Row]
    settings: dict[str, Any]

    def row(self, app_id: str) -> Row | None:
        return next((r for r in self.rows if r.app.id == app_id), None)

    @property
    def target_met(self) -> bool | None:
        """Cached JWT under uvicorn (pure ASGI) reaches 0.95 of bare; None if not measured."""
        r = self.row("asgi-jwt")
        return None if r is None or r.ratio is None else r.ratio >= TARGET_RATIO

    def markdown(self) -> str:
        lines = [
            "| server | app | req/s (median) | × bare | × bare, rounds' IQR | p50 latency ms |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for r in self.rows:
            ratio = "—" if r.ratio is None else f"{r.ratio:.2f}"
            iqr = "—" if r.ratio_spread is None else "{:.2f}–{:.2f}".format(*r.ratio_spread)
            p50 = "—" if r.p50_ms is None else f"{r.p50_ms:.2f}"
            lines.append(
                f"| {r.app.server} | {r.app.group}: {r.app.name} | {r.rps:,.0f} | {ratio} "
                f"| {iqr} | {p50} |"
            )
        return "\n".join(lines)

    def summary(self) -> list[str]:
        out = []
        jwt = self.row("asgi-jwt")
        if jwt is not None and jwt.ratio is not None:
            verdict = "met" if self.target_met else "NOT met"
            out.append(
                f"Target: a cached JWT under uvicorn keeps ≥ {TARGET_RATIO:g} × the bare app's "
                f"req/s: {verdict} ({_ratio(jwt)})"
            )
        recipe, ours = self.row("starlette-pyjwt"), self.row("starlette-jwt")
        if recipe is not None and recipe.ratio is not None:
            line = f"× bare Starlette: the Starlette + PyJWT recipe {_ratio(recipe)}"
            if ours is not None and ours.ratio is not None:
                line += f"; authgate's cached JWT in the same app {_ratio(ours)}"
            out.append(line)
        return out

    def notes(self) -> list[str]:
        s = self.settings
        lines = [f"Load: {s['generator']}, {s['duration_s']:g} s per app per round, "]
        lines[0] += f"{s['rounds']} interleaved rounds, {s['elapsed_s']:.1f} s in all."
        lines += [f"Server: {v}." for v in s["servers"].values()]
        lines.append(
            f"{s['machine']['cpu_count']} cores shared by the server and the load generator; "
            "nothing pinned. × bare: median over rounds of the ratio to the bare app of the "
            "same group in the same round; IQR: the middle half of those per-round ratios."
        )
        busy = s["cpu_busy_before"]
        if busy is not None and busy >= BUSY:
            lines.append(
                f"Other processes kept the CPU {busy:.0%} busy just before the run: "
                "these figures are less reliable."
            )
        spread = [
            f"{r.app.group} {min(x.rps for x in r.loads):,.0f}–{max(x.rps for x in r.loads):,.0f}"
            for r in self.rows
            if r.app.bare and len(r.loads) > 1
        ]
        if spread:
            lines.append("Bare req/s across rounds (machine drift): " + "; ".join(spread) + ".")
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "results": [r.as_dict() for r in self.rows],
            "target": {
                "label": "cached JWT under uvicorn, ratio to the bare app's req/s",
                "min_ratio": TARGET_RATIO,
                "met": self.target_met,
            },
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.as_dict(), indent=2, ensure_ascii=False) + "\n")


def run_e2e(
    duration_s: float,
    rounds: int,
    progress: Progress = None,
    *,
    only: Sequence[str] | None = None,
    load: str | Generator = "auto",
    warmup_s: float = 0.3,
) -> E2EReport:
    """Serve the apps (`only`: ids from `APPS`, their groups' bare apps added), check them,
    warm each up with the Python client, then measure `rounds` interleaved rounds of
    `duration_s` seconds per app. Raises E2EError on any failure; servers always stop."""
    if duration_s <= 0 or rounds < 1:
        raise ValueError("duration_s must be positive and rounds at least 1")
    started = perf_counter()
    busy = cpu_busy()
    apps = select(only)
    gen = generator(load) if isinstance(load, str) else load
    setup = ServerSetup.detect()
    creds = Credentials()
    say = progress or (lambda _line: None)
    with tempfile.TemporaryDirectory(prefix="authgate-e2e-") as tmp:
        config = Path(tmp) / "config.json"
        creds.write(config)
        env = server_env(config)
        say(f"starting {len(apps)} servers")
        with serving(apps, setup, env) as servers:
            rows = [Row(s.app, check(s, creds.headers(s.app.credential))) for s in servers]
            warm = PythonLoad(4)
            for s in servers:
                _ok(s, warm.run(s.url, creds.headers(s.app.credential), warmup_s))
            groups: dict[str, list[tuple[Server, Row]]] = {}
            for s, row in zip(servers, rows, strict=True):
                groups.setdefault(s.app.group, []).append((s, row))
            order = list(groups.values())
            for r in range(rounds):
                # Rotate the groups and the apps within each: no app is always first.
                for members in _rotate(order, r):
                    for s, row in _rotate(members, r):
                        got = _ok(s, gen.run(s.url, creds.headers(s.app.credential), duration_s))
                        row.loads.append(got)
                        say(f"round {r + 1}/{rounds} {s.app.id}: {got.rps:,.0f} req/s")
    _ratios(rows)
    settings = {
        "duration_s": gen.effective_duration(duration_s),
        "requested_duration_s": duration_s,
        "rounds": rounds,
        "generator": gen.describe(),
        "generator_name": gen.name,
        "servers": {k: v for k, v in setup.describe().items() if any(a.server == k for a in apps)},
        "versions": {d: _version(d) for d in ("uvicorn", "gunicorn", "starlette", "flask")},
        "machine": machine(),
        "elapsed_s": round(perf_counter() - started, 2),
        # Other processes on the same cores skew every figure: say how busy they kept it.
        "cpu_busy_before": None if busy is None else round(busy, 3),
    }
    return E2EReport(rows, settings)


def cpu_busy(seconds: float = 0.5) -> float | None:
    """The share of all cores' time not idle over `seconds` (Linux; None elsewhere)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
        return sum(ticks), ticks[3] + ticks[4]  # all, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def _rotate(items: list[Any], r: int) -> list[Any]:
    shift = r % len(items)
    return [*items[shift:], *items[:shift]]


def _ok(server: Server, load: Load) -> Load:
    if load.failed:
        raise E2EError(f"{server.app.id}: {load.failed}\n{server.output()}")
    return load


def _ratios(rows: list[Row]) -> None:
    bare = {r.app.group: r for r in rows if r.app.bare}
    for row in rows:
        base = bare.get(row.app.group)
        if base is not None and base is not row:
            row.ratios = [a.rps / b.rps for a, b in zip(row.loads, base.loads, strict=True)]


def _ratio(row: Row) -> str:
    """The median ratio, and the quartiles of the per-round ratios when there are two."""
    text = f"{row.ratio:.2f}"
    if row.ratio_spread is not None:
        text += " (rounds' IQR {:.2f}–{:.2f})".format(*row.ratio_spread)
    return text


# -- command line ------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.split("\n")[0])
    # Many short rounds: one round's figures swing by ±15 % here, medians settle them.
    p.add_argument(
        "--duration", type=float, help="seconds per app per round (default 1; wrk: whole s)"
    )
    p.add_argument("--rounds", type=int, help="interleaved rounds (default 10, quick 2)")
    p.add_argument("--quick", action="store_true", help="1 s x 2 rounds: about 25 s")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--only",
        action="append",
        metavar="ID",
        choices=[a.id for a in APPS],
        help=f"only these apps (repeatable; their group's bare app always runs): "
        f"{', '.join(a.id for a in APPS)}",
    )
    p.add_argument(
        "--load",
        choices=("auto", "wrk", "python"),
        default="auto",
        help="load generator: wrk if on PATH (auto), or the Python client",
    )
    p.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    # A SIGTERM to the runner unwinds like Ctrl-C, so the servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        report = run_e2e(
            args.duration or 1.0,
            args.rounds or (2 if args.quick else 10),
            (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None,
            only=args.only,
            load=args.load,
        )
    except E2EError as exc:
        print(f"e2e benchmark failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the servers are stopped by now
        print("interrupted", file=sys.stderr)
        return 130
    print(report.markdown())
    print()
    for line in [*report.summary(), "", *report.notes()]:
        print(line)
    if args.json:
        report.write_json(args.json)
    return 1 if args.check and report.target_met is False else 0


if __name__ == "__main__":
    sys.exit(main())

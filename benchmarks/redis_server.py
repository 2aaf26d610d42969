"""A real `redis-server` (Debian's binary) for the tests and the fleet benchmark: never a
fake. Here, not in tests/, so that `benchmarks.fleet` can start one without importing the
test suite; `tests/redis_server.py` re-exports it.

`scripts/test.sh` (through `scripts/redis-setup.sh`) installs it when missing. Redis cannot
pick a free port itself (`--port 0` turns TCP off), so a socket is bound to port 0 to learn
a free one, closed, and Redis started on it, again on another port when something took it
meanwhile.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

START_ATTEMPTS = 5
READY_SECONDS = 10.0


class RedisServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int) -> bool:
    """PING over a plain socket (RESP), so that this file needs no client library."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
            return reply.startswith((b"+PONG", b"-NOAUTH"))  # up, with or without a password
    except OSError:
        return False


class RedisServer:
    """One `redis-server` on 127.0.0.1, no persistence, files in `directory`."""

    def __init__(self, directory: Path, *, password: str | None = None) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(
                "redis-server is not installed: apt-get install redis-server "
                "(scripts/test.sh does it)"
            )
        self.binary = binary
        self.directory = directory
        self.password = password
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self, port: int | None = None) -> None:
        """Start on `port` (to restart on the same one), else on a free one."""
        attempts = 1 if port else START_ATTEMPTS
        error = ""
        for _ in range(attempts):
            self.port = port or free_port()
            log = self.directory / f"redis-{self.port}.log"
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--bind",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.directory),
                    "--logfile",
                    str(log),
                    "--daemonize",
                    "no",
                    *(["--requirepass", self.password] if self.password else []),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=self.directory,
            )
            deadline = time.monotonic() + READY_SECONDS
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break  # exited: most likely the port was taken
                if _ping(self.port):
                    return
                time.sleep(0.01)
            self.stop()
            error = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            if "Address already in use" not in error:
                break
        raise RedisServerError(f"redis-server did not start on port {self.port}: {error}")

    def stop(self) -> None:
        """Kill the server (SIGKILL: as abrupt as a crash) and wait for it."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def restart(self) -> None:
        """Start again on the same port, after `stop`."""
        self.start(self.port)

"""A real uvicorn server on 127.0.0.1 for the duration of a test."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class Server:
    """A real uvicorn server on 127.0.0.1 for the duration of a test."""

    def __init__(self, app: Any, **config: Any) -> None:
        """`config`: further `uvicorn.Config` options, e.g. `http="h11"`."""
        # The server is handed the socket bound here: no other process can take the port
        # between choosing it and listening on it.
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **config))
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(500):  # bounded readiness polling
            if self.server.started:
                break
            time.sleep(0.01)
        assert self.server.started
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.sock.close()


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `request` as it is (no client-side normalisation: lowercase methods, repeated
    headers) on a new connection; return the status, headers (lowercased names; repeats
    joined) and body. The request should say `Connection: close`."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        chunks = []
        for _ in range(10_000):  # bounded read until the server closes
            chunk = conn.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        name, value = name.strip().lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return int(status_line.split(" ", 2)[1]), headers, body

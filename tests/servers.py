"""A real uvicorn server on 127.0.0.1 for the duration of a test."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import uvicorn


class Server:
    """A real uvicorn server on 127.0.0.1 for the duration of a test."""

    def __init__(self, app: Any) -> None:
        # The server is handed the socket bound here: no other process can take the port
        # between choosing it and listening on it.
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
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

"""Bounded HTTP for the core's effects: JWKS, discovery, introspection.

The sync side shares one `httpx.Client` (thread-safe, keep-alive) whose sockets cut every
operation to what is left of the exchange's time-out. The async side opens a short-lived
`httpx.AsyncClient` per request with a shared TLS context, bounded as a whole by the
driver: fetches are rare (cache misses), and nothing is bound to an event loop that may
be gone by the next fetch.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpcore
import httpx

MAX_BODY = 1 << 20  # JWKS and discovery documents are a few KiB; refuse to buffer more


class FetchError(Exception):
    """The remote answered with something unusable (status, size)."""


@dataclass(frozen=True, slots=True)
class HTTPResult:
    status: int
    headers: Mapping[str, str]
    content: bytes


def is_loopback_url(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_secure_url(url: str, what: str) -> str:
    """HTTPS only, except to loopback (tests, sidecars): tokens and keys stay encrypted."""
    parts = urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and is_loopback_url(url)):
        return url
    raise ValueError(f"{what} must be an https:// URL (http only for loopback): {url!r}")


@functools.cache
def _default_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


# The end of the sync exchange running in this thread (greenlet, under gevent), if any.
_deadline = threading.local()


def _left(timeout: float | None) -> float | None:
    """A socket operation's time-out, cut to what is left of the exchange's deadline."""
    end: float | None = getattr(_deadline, "end", None)
    if end is None:
        return timeout
    left = end - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the exchange took longer than its time-out")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    def __init__(self, stream: httpcore.NetworkStream) -> None:
        self._stream = stream

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, _left(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, _left(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, _left(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's sync sockets, each operation's time-out cut to the exchange's deadline:
    httpx bounds each connect, read and write, so a server sending its headers or body a
    byte at a time could otherwise hold a thread as long as it liked."""

    def __init__(self) -> None:
        self._backend = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        stream = self._backend.connect_tcp(
            host, port, _left(timeout), local_address, socket_options
        )
        return _DeadlineStream(stream)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


class _Transport(httpx.BaseTransport):
    """httpx's request and response over an httpcore pool on `_DeadlineBackend`."""

    def __init__(self, tls: ssl.SSLContext) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=tls,
            max_connections=100,  # httpx's own limits
            max_keepalive_connections=20,
            keepalive_expiry=5.0,
            network_backend=_DeadlineBackend(),
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        url = request.url
        resp = self._pool.handle_request(
            httpcore.Request(
                method=request.method,
                url=httpcore.URL(
                    scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
                ),
                headers=request.headers.raw,
                content=request.stream,
                extensions=request.extensions,
            )
        )
        assert isinstance(resp.stream, Iterable)
        return httpx.Response(
            resp.status, headers=resp.headers, stream=_Body(resp.stream), extensions=resp.extensions
        )

    def close(self) -> None:
        self._pool.close()


class HTTP:
    """GET/POST with a time-out over the whole exchange and a size cap, sync and async."""

    def __init__(self, *, timeout: float = 5.0, verify: ssl.SSLContext | bool = True) -> None:
        self.timeout = timeout
        self._verify_arg = verify
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def _tls(self) -> ssl.SSLContext | bool:
        # One default context per process, made when a client first needs it: loading
        # the CA store costs ~40 ms and ~0.75 MiB, which static-key JWTAuths never use.
        return _default_tls() if self._verify_arg is True else self._verify_arg

    def _sync_client(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                tls = self._tls()
                if not isinstance(tls, ssl.SSLContext):  # verify=False: loopback tests only
                    tls = ssl.create_default_context()
                    tls.check_hostname = False
                    tls.verify_mode = ssl.CERT_NONE
                self._client = httpx.Client(
                    timeout=self.timeout, transport=_Transport(tls), follow_redirects=False
                )
            return self._client

    @staticmethod
    def _result(resp: httpx.Response, body: bytes) -> HTTPResult:
        return HTTPResult(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, body)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> HTTPResult:
        """The sync side: one `httpx.Client` (thread-safe, keep-alive), every socket
        operation of an exchange cut to what is left of its `timeout`."""
        _deadline.end = time.monotonic() + self.timeout
        try:
            with self._sync_client().stream(method, url, headers=headers, data=data) as resp:
                body = b""
                for chunk in resp.iter_bytes():
                    body += chunk
                    if len(body) > MAX_BODY:
                        raise FetchError("response too large")
                return self._result(resp, body)
        finally:
            _deadline.end = None

    async def arequest(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> HTTPResult:
        async with (
            httpx.AsyncClient(
                timeout=self.timeout, verify=self._tls(), follow_redirects=False
            ) as client,
            client.stream(method, url, headers=headers, data=data) as resp,
        ):
            body = b""
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise FetchError("response too large")
            return self._result(resp, body)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

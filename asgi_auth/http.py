"""Bounded HTTP for the core's effects: JWKS, discovery, introspection.

The sync side shares one `httpx.Client` (thread-safe). The async side opens a short-lived
`httpx.AsyncClient` per request with a shared TLS context: fetches are rare (cache
misses), and nothing is bound to an event loop that may be gone by the next fetch.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

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


class HTTP:
    """GET/POST with a time-out and a size cap, sync and async."""

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
                self._client = httpx.Client(
                    timeout=self.timeout, verify=self._tls(), follow_redirects=False
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
        # httpx's time-outs bound each connect, read and write, not the whole exchange: a
        # server that sends a byte now and then would hold this thread for as long as it
        # likes. The deadline bounds it (to about twice the time-out: one read may still
        # be waiting when it passes). The async side is bounded by the driver instead.
        deadline = time.monotonic() + self.timeout
        with self._sync_client().stream(method, url, headers=headers, data=data) as resp:
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise FetchError("response too large")
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("response took longer than the time-out")
            return self._result(resp, body)

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

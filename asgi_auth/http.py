"""Bounded HTTP for the core's effects: JWKS, discovery, introspection.

Each request opens a short-lived `httpx.AsyncClient` with a shared TLS context: fetches
are rare (cache misses), and nothing is bound to an event loop that may be gone by the
next fetch. Sync callers run it on a private loop, so one deadline bounds the whole
exchange on both sides.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import ssl
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
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
    """GET/POST with a time-out over the whole exchange and a size cap, sync and async."""

    def __init__(self, *, timeout: float = 5.0, verify: ssl.SSLContext | bool = True) -> None:
        self.timeout = timeout
        self._verify_arg = verify

    def _tls(self) -> ssl.SSLContext | bool:
        # One default context per process, made when a client first needs it: loading
        # the CA store costs ~40 ms and ~0.75 MiB, which static-key JWTAuths never use.
        return _default_tls() if self._verify_arg is True else self._verify_arg

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
        """`arequest`, from sync code: bounded by `timeout` as a whole.

        httpx's sync time-outs bound each connect, read and write, not the exchange: a
        server that sends its headers or body a byte at a time would hold the thread as
        long as it liked. So the request runs on a private event loop, where the deadline
        can cancel it mid-read and close its connection. Fetches are cache misses (a JWKS
        refresh, an introspection), so the loop's ~0.3 ms does not count."""
        call = asyncio.wait_for(
            self.arequest(method, url, headers=headers, data=data), self.timeout
        )
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(call)
        # Sync code called from a thread that runs a loop: leave that loop alone.
        with ThreadPoolExecutor(1, thread_name_prefix="authgate-fetch") as pool:
            return pool.submit(asyncio.run, call).result()

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

"""Bounded HTTP for the core's effects: JWKS, discovery, introspection.

The sync side shares one `httpx2.Client` (thread-safe, keep-alive), each exchange on a
fetch thread, so that a request waits `timeout` at most whatever the server does. The async
side opens a short-lived `httpx2.AsyncClient` per request with a shared TLS context,
bounded as a whole by the driver: fetches are rare (cache misses), and nothing is bound
to an event loop that may be gone by the next fetch.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import ssl
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx2

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
        self._client: httpx2.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _tls(self) -> ssl.SSLContext | bool:
        # One default context per process, made when a client first needs it: loading
        # the CA store costs ~40 ms and ~0.75 MiB, which static-key JWTAuths never use.
        return _default_tls() if self._verify_arg is True else self._verify_arg

    def _sync_client(self) -> httpx2.Client:
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                # New in a forked worker too: the pooled sockets are the parent's.
                self._client = httpx2.Client(
                    timeout=self.timeout,
                    verify=self._tls(),
                    follow_redirects=False,
                    # Shorter than common server keep-alives (uvicorn: 5 s), so a reused
                    # connection is rarely one the server is closing.
                    limits=httpx2.Limits(keepalive_expiry=2.0),
                )
                self._pid = os.getpid()
            return self._client

    def _drop(self, client: httpx2.Client) -> None:
        with self._lock:
            if self._client is client:
                self._client = None
        client.close()

    @staticmethod
    def _result(resp: httpx2.Response, body: bytes) -> HTTPResult:
        return HTTPResult(resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, body)

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> HTTPResult:
        """The sync side: the exchange runs on a fetch thread of its own (a daemon) and
        the caller waits `timeout` for it at most. httpx2's time-outs bound each connect,
        read and write, not the exchange (nor name lookup): a server sending its headers
        a byte at a time would otherwise hold a request thread as long as it liked."""
        deadline = time.monotonic() + self.timeout
        job: Future[HTTPResult] = Future()
        used: list[httpx2.Client] = []

        def run() -> None:
            if not job.set_running_or_notify_cancel():
                return
            try:
                client = self._sync_client()
                used.append(client)
                job.set_result(self._fetch(client, method, url, headers, data, deadline))
            except BaseException as exc:
                job.set_exception(exc)

        # A thread per fetch: fetches are cache misses, and a kept pool was a source of
        # bugs (queued behind a stalled fetch, wedged after a failed start, never freed).
        threading.Thread(target=run, name="authgate-fetch", daemon=True).start()
        try:
            return job.result(max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            if not job.cancel():
                if job.done():  # it answered just as the wait ended
                    return job.result()
                if used:
                    # The only handle on a stalled exchange is its socket: closing the
                    # client's frees the fetch thread at once (the next fetch opens a
                    # new client). Other exchanges on it fail too, as 503s: rare, and
                    # better than a thread held for as long as a server cares to drip.
                    self._drop(used[0])
            raise TimeoutError(f"no answer within {self.timeout} s") from None

    def _fetch(
        self,
        client: httpx2.Client,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        data: Mapping[str, str] | None,
        deadline: float,
    ) -> HTTPResult:
        with client.stream(method, url, headers=headers, data=data) as resp:
            body = b""
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY:
                    raise FetchError("response too large")
                if time.monotonic() > deadline:
                    raise FetchError("response too slow")
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
            httpx2.AsyncClient(
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

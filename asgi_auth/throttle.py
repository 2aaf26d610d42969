"""Failed-credential throttling (`GateOptions(throttle=Throttle(...))`), extra "throttle".

Too many failed credentials from one client address, or for one API key id, within a
window, and that client (or key id) gets 429 with `Retry-After` until the window frees.
Counting is the `limits` library's (a moving window by default), in its storages: memory
for one process, Redis for a fleet. `limits` is imported only when a `Throttle` is built.

What counts: a credential that was checked and failed, i.e. 401 `invalid_token` and 400
`invalid_request` raised while verifying it (empty, repeated, unreadable, unknown, wrong
secret, bad signature, expired). Not a request without credentials, not a 403 (the
credential was good), not a 503, not a DPoP proof (checked after its token was).

Cost: only failures write. The check runs only for a credential this process has not
verified yet (a cache miss), before any verification or store lookup, and asks the storage
only about addresses and key ids this process saw fail recently (a small bounded dict). A
cached valid credential is never throttled: it was verified already, so no guess is
involved, and the hot path stays as it was (no I/O, no allocation). Across a fleet each
worker learns of another's count at its own first failure for that address or key id: at
most one more verification per worker after the limit is reached.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from .errors import AuthError, InvalidRequest, InvalidToken, ServiceUnavailable, TooManyRequests

if TYPE_CHECKING:
    from .authenticator import Authenticator

logger = logging.getLogger("asgi_auth")

_NAMESPACE = "authgate-throttle"
_RECENT_MAX = 4096


class Throttle:
    """Throttle failed credentials per client address and per API key id.

    - `limit`: a `limits` rate string, e.g. `"10/minute"`: that many failures per window.
    - `storage`: `"memory://"` (one process) or a Redis URL (`"redis://host:6379/0"`,
      shared by every worker that names it). Any `limits` storage URI works.
    - `per`: what is counted: `"address"` (the client address, through
      `trusted_proxies`: the rightmost `X-Forwarded-For` entry when the peer is a
      trusted proxy), `"key_id"` (an API key's id, read from the key without lookup), or
      both (the default).
    - `fail`: when the storage is down, `"closed"` (default) answers 503 with
      `Retry-After` to a request that needs the check (one from an address or key id
      with recent failures); `"open"` lets it through unthrottled, logged once per outage.
    - `strategy`: `"moving-window"` (default) or `"fixed-window"`.
    - `timeout`: seconds a Redis call may take (socket and connect timeouts).

    Under ASGI, calls to a network storage run in a worker thread (`asyncio.to_thread`),
    so a slow Redis never blocks the event loop; the memory storage is called directly.
    """

    def __init__(
        self,
        limit: str = "10/minute",
        *,
        storage: str = "memory://",
        per: tuple[Literal["address", "key_id"], ...] | Literal["address", "key_id"] = (
            "address",
            "key_id",
        ),
        fail: Literal["closed", "open"] = "closed",
        strategy: Literal["moving-window", "fixed-window"] = "moving-window",
        timeout: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        try:
            from limits import parse
            from limits.storage import MemoryStorage, storage_from_string
            from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter
        except ImportError as exc:
            raise ImportError(
                "Throttle needs the limits library: pip install 'authgate[throttle]'"
            ) from exc

        if fail not in ("closed", "open"):
            raise ValueError('fail must be "closed" or "open"')
        per = (per,) if isinstance(per, str) else tuple(per)
        if not per or any(p not in ("address", "key_id") for p in per):
            raise ValueError('per must name "address", "key_id" or both')
        if strategy not in ("moving-window", "fixed-window"):
            raise ValueError('strategy must be "moving-window" or "fixed-window"')
        self.limit = parse(limit)
        self.per_address = "address" in per
        self.per_key_id = "key_id" in per
        self.fail = fail
        options: dict[str, float] = {}
        if storage.startswith(("redis", "rediss", "valkey")):
            options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        self.storage: Any = storage_from_string(storage, **options)
        self._local = isinstance(self.storage, MemoryStorage)
        limiter_class = (
            MovingWindowRateLimiter if strategy == "moving-window" else FixedWindowRateLimiter
        )
        self.limiter: Any = limiter_class(self.storage)
        self._window = float(self.limit.get_expiry())
        self._clock = clock
        #: "a:<address>" / "k:<key id>" -> until when this process keeps asking the storage.
        self.recent: dict[str, float] = {}
        self._lock = threading.Lock()  # WSGI threads share `recent`
        self._down = False
        self._label = storage.split("://", 1)[0] + "://"

    def __repr__(self) -> str:  # never the URL: it may hold a password
        return f"Throttle({str(self.limit)!r}, storage={self._label!r}, fail={self.fail!r})"

    # -- what is counted -----------------------------------------------------------------

    def subjects(self, address: str | None, auth: Authenticator, token: str) -> list[str]:
        """The counters a request with this credential touches."""
        out = []
        if self.per_address and address:
            out.append("a:" + address)
        if self.per_key_id:
            key_id = _key_id(auth, token)
            if key_id is not None:
                out.append("k:" + key_id)
        return out

    @staticmethod
    def counts(error: AuthError) -> bool:
        """Whether a failure while verifying a credential signals guessing."""
        return isinstance(error, InvalidToken | InvalidRequest) and error.status in (400, 401)

    # -- sync ----------------------------------------------------------------------------

    def check(self, subjects: list[str]) -> None:
        """Raise `TooManyRequests` (or 503 when the storage is down and `fail="closed"`)
        when one of `subjects` is over the limit. No I/O unless one failed recently."""
        suspects = self._suspects(subjects)
        if suspects:
            self._after_check(suspects, self._storage_call(self._over, suspects))

    def failed(self, subjects: list[str]) -> None:
        """Count one failure for each subject; raise `TooManyRequests` when that went over."""
        if subjects:
            self._mark(subjects)
            self._after_hit(self._storage_call(self._hit, subjects))

    # -- async: a network storage is called in a thread ----------------------------------

    async def acheck(self, subjects: list[str]) -> None:
        suspects = self._suspects(subjects)
        if suspects:
            self._after_check(suspects, await self._astorage_call(self._over, suspects))

    async def afailed(self, subjects: list[str]) -> None:
        if subjects:
            self._mark(subjects)
            self._after_hit(await self._astorage_call(self._hit, subjects))

    # -- internals -----------------------------------------------------------------------

    def _suspects(self, subjects: list[str]) -> list[str]:
        recent = self.recent
        if not recent:
            return []
        now = self._clock()
        out = []
        with self._lock:
            for s in subjects:
                until = recent.get(s)
                if until is not None:
                    if until > now:
                        out.append(s)
                    else:
                        del recent[s]
        return out

    def _mark(self, subjects: list[str]) -> None:
        recent = self.recent
        until = self._clock() + self._window
        with self._lock:
            for s in subjects:
                recent.pop(s, None)
                if len(recent) >= _RECENT_MAX:
                    # Bounded: the oldest goes (checked again after its next failure).
                    del recent[next(iter(recent))]
                recent[s] = until

    def _over(self, subjects: list[str]) -> int | None:
        """Seconds until the first over-limit subject frees up, or None."""
        for s in subjects:
            if not self.limiter.test(self.limit, _NAMESPACE, s):
                return self._retry_after(s)
        return None

    def _hit(self, subjects: list[str]) -> int | None:
        over = None
        for s in subjects:
            if not self.limiter.hit(self.limit, _NAMESPACE, s) and over is None:
                over = self._retry_after(s)
        return over

    def _retry_after(self, subject: str) -> int:
        reset, _remaining = self.limiter.get_window_stats(self.limit, _NAMESPACE, subject)
        return max(1, math.ceil(float(reset) - time.time()))

    _DOWN = object()

    def _storage_call(self, fn: Callable[[list[str]], int | None], subjects: list[str]) -> object:
        try:
            result = fn(subjects)
        except Exception as exc:  # each storage raises its client library's own errors
            return self._storage_down(exc)
        self._storage_up()
        return result

    async def _astorage_call(
        self, fn: Callable[[list[str]], int | None], subjects: list[str]
    ) -> object:
        if self._local:
            return self._storage_call(fn, subjects)
        return await asyncio.to_thread(self._storage_call, fn, subjects)

    def _storage_down(self, exc: Exception) -> object:
        if not self._down:
            self._down = True
            logger.warning(
                "throttle storage %s unavailable (%s): %s",
                self._label,
                type(exc).__name__,
                "refusing requests that need the check (503)"
                if self.fail == "closed"
                else "not throttling until it is back",
            )
        return self._DOWN

    def _storage_up(self) -> None:
        if self._down:
            self._down = False
            logger.warning("throttle storage %s is back", self._label)

    def _after_check(self, subjects: list[str], result: object) -> None:
        if result is self._DOWN:
            if self.fail == "closed":
                raise ServiceUnavailable(
                    "throttle backend unavailable", reason="throttle_unavailable"
                )
            return
        if result is not None:
            assert isinstance(result, int)
            raise TooManyRequests(retry_after=result)

    def _after_hit(self, result: object) -> None:
        # Storage down while counting: the request is refused anyway (its own 401/400);
        # the subjects are marked recent, so their next request needs the check.
        if result is not None and result is not self._DOWN:
            assert isinstance(result, int)
            raise TooManyRequests(retry_after=result)


def _key_id(auth: Authenticator, token: str) -> str | None:
    prefixes = getattr(auth, "prefixes", None)
    if not isinstance(prefixes, frozenset):
        return None
    from .keys.format import KeyFormatError, parse

    try:
        return parse(token, prefixes)[1]
    except KeyFormatError:
        return None


def client_address(peer: str | None, trusted: Callable[[str], bool], xff: str | None) -> str | None:
    """The client's address: the rightmost `X-Forwarded-For` entry when the socket peer
    is a trusted proxy, else the peer."""
    if peer and xff and trusted(peer):
        last = xff.rsplit(",", 1)[-1].strip()
        if last:
            return last
    return peer

"""What the middleware needs from an authenticator."""

from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

from .errors import Challenge
from .flow import Flow
from .identity import Identity

_VCHAR = bytes(range(0x21, 0x7F))

#: How errors name a credential sent in the `Authorization` header.
AUTHORIZATION_LABEL = "Authorization header"


def visible_ascii(value: str) -> bool:
    """Whether `value` is only visible ASCII (RFC 9110 VCHAR), as a credential must be."""
    # Deleting every VCHAR must leave nothing: a C table lookup, twice as fast as
    # str.isprintable, which looks each character up in the Unicode tables.
    return value.isascii() and not value.encode("ascii").translate(None, _VCHAR)


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def require_durations(owner: str, **seconds: float) -> None:
    """`ValueError` unless every value is a number of seconds >= 0 (infinity: "never").

    NaN compares false with everything, so a NaN leeway, TTL or grace would not fail a
    check: it would switch it off (an expired token accepted, a removed key kept)."""
    for name, value in seconds.items():
        if not (_seconds(value) and value >= 0):
            raise ValueError(f"{owner}: {name} must be a number of seconds >= 0, not {value!r}")


def require_timeouts(owner: str, **seconds: float) -> None:
    """`ValueError` unless every value is a finite number of seconds > 0."""
    for name, value in seconds.items():
        if not (_seconds(value) and value > 0 and math.isfinite(value)):
            raise ValueError(f"{owner}: {name} must be finite seconds > 0, not {value!r}")


class RequestInfo(NamedTuple):
    """Non-secret facts about the request, for slow paths, error hooks and logs.

    A named tuple: it is made for every request that misses the cache, and a tuple is
    the cheapest immutable record Python has."""

    method: str
    path: str
    scheme: str
    client: str | None


@runtime_checkable
class Authenticator(Protocol):
    """A pluggable credential check, shared by the ASGI and WSGI middlewares.

    - `header`: a dedicated header it reads (lowercase, e.g. `"x-api-key"`), or None;
    - `schemes`: `Authorization` schemes it takes (lowercase, e.g. `("bearer",)`);
    - `query_param`: a query parameter it takes, only when the user turned that on;
    - `challenge`: the `WWW-Authenticate` challenge it answers to;
    - `cached(token)`: the hot path, pure CPU: an Identity seen recently, or None;
    - `flow(token, request)`: the full check as a generator (see `asgi_auth.flow`);
    - `accepts(token)`: whether this one, among several sharing a scheme, owns the token.

    Optional, for speed: `quick(token) -> Identity | None`, the full check when it needs
    no I/O (None sends the request down `flow`; a subclass that overrides `flow` must
    override or disable it too); `strict_syntax = True` when the check itself refuses
    any `Authorization` credential that is not visible ASCII, answering 400 for those,
    so the middleware need not scan it first.
    """

    method: str
    header: str | None
    schemes: tuple[str, ...]
    query_param: str | None
    challenge: Challenge

    def cached(self, token: str) -> Identity | None: ...

    def flow(self, token: str, request: RequestInfo) -> Flow[Identity]: ...

    def accepts(self, token: str) -> bool: ...

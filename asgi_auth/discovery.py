"""Authorization server metadata: OpenID Connect Discovery, then RFC 8414."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from . import strict_json
from .errors import ServiceUnavailable
from .flow import Effect, Flow
from .http import HTTP, require_secure_url

_ACCEPT_JSON = {"Accept": "application/json"}


def discovery_urls(issuer: str) -> list[str]:
    """OpenID Connect Discovery §4, then RFC 8414 §3 (well-known inserted before the path)."""
    base = issuer.rstrip("/")
    parts = urlsplit(issuer)
    path = parts.path.rstrip("/")
    rfc8414 = urlunsplit(
        (parts.scheme, parts.netloc, "/.well-known/oauth-authorization-server" + path, "", "")
    )
    return [base + "/.well-known/openid-configuration", rfc8414]


def get(
    http: HTTP,
    url: str,
    timeout: float,
    *,
    join: bool = True,
    start: bool = True,
    settle: Callable[[Any, BaseException | None], None] | None = None,
) -> Effect:
    """The effect of a JSON GET, shared by every caller of the same URL."""
    return Effect(
        key=("GET", url),
        sync=partial(http.request, "GET", url, headers=_ACCEPT_JSON),
        async_=partial(http.arequest, "GET", url, headers=_ACCEPT_JSON),
        timeout=timeout,
        join=join,
        start=start,
        settle=settle,
    )


class Metadata:
    """An issuer's metadata document, fetched once and kept (issuer metadata rarely
    changes; endpoints found in it are checked to be HTTPS, or loopback)."""

    def __init__(self, issuer: str, http: HTTP, timeout: float, clock: Callable[[], float]) -> None:
        require_secure_url(issuer, "issuer (for discovery)")
        self.issuer = issuer
        self._http = http
        self._timeout = timeout
        self._clock = clock
        self.document: Mapping[str, Any] | None = None

    def _unavailable(self, reason: str) -> ServiceUnavailable:
        return ServiceUnavailable(
            "authorization server metadata unavailable", reason=reason, context={"iss": self.issuer}
        )

    def endpoint(self, name: str) -> Flow[str]:
        """The URL of endpoint `name` (e.g. `jwks_uri`), discovering it first if needed."""
        doc = self.document
        if doc is None:
            doc = yield from self._discover()
        url = doc.get(name)
        if not isinstance(url, str):
            raise self._unavailable("discovery_invalid")
        try:
            return require_secure_url(url, name)
        except ValueError:
            raise self._unavailable("discovery_invalid") from None

    def _discover(self) -> Flow[Mapping[str, Any]]:
        for url in discovery_urls(self.issuer):
            result = yield get(self._http, url, self._timeout)
            if result.status == 404:
                continue
            if result.status != 200:
                raise self._unavailable("discovery_failed")
            try:
                doc = strict_json.loads(result.content)
            except ValueError:  # also NaN, infinities and too deep nesting
                doc = None
            # RFC 8414 §3.3 / OIDC Discovery §4.3: the document must name this issuer.
            if not isinstance(doc, dict) or doc.get("issuer") != self.issuer:
                raise self._unavailable("discovery_invalid")
            self.document = MappingProxyType(doc)
            return self.document
        raise self._unavailable("discovery_failed")

"""Caller side: auth classes for clients of protected APIs, for httpx2 and httpx alike.

```python
import httpx2  # or httpx: the same objects work with either, sync and async
from asgi_auth.client import APIKey, ClientCredentials

httpx2.get("https://api.example/items", auth=APIKey("agk_..."))
auth = ClientCredentials("https://idp.example/token", "svc", secret, scope="read",
                         resource="https://api.example", dpop=True)
with httpx2.Client(auth=auth) as client:     # or httpx2.AsyncClient, httpx.Client ...
    client.get("https://api.example/items")
```
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode, urlsplit

import httpx2
import jwt as pyjwt
from cryptography.hazmat.primitives.asymmetric import ec

from . import strict_json
from .dpop import access_token_hash, b64url, normalize_htu, thumbprint

__all__ = ["APIKey", "ClientCredentials", "DPoPKey", "TokenError", "pkce_pair"]

# Both clients accept an `auth` only if it is an instance of their own `Auth` class, and
# both drive it the same way (`sync_auth_flow`/`async_auth_flow` around `auth_flow`). So
# the classes below derive from httpx2's `Auth` and, where httpx is installed, from
# httpx's too: one object serves either client, and neither package stands in for the
# other. The flows only use what the two share, and build their own requests with the
# class of the request they are given.
if TYPE_CHECKING:
    _Auth = httpx2.Auth
else:
    try:
        import httpx
    except ImportError:
        _Auth = httpx2.Auth
    else:

        class _Auth(httpx2.Auth, httpx.Auth):
            pass


def pkce_pair() -> tuple[str, str]:
    """A PKCE `(code_verifier, code_challenge)` pair, method S256 (RFC 7636 §4.1-4.2)."""
    verifier = secrets.token_urlsafe(64)[:96]  # 43-128 characters of [A-Za-z0-9-._~]
    challenge = b64url(hashlib.sha256(verifier.encode("ascii")).digest())
    return verifier, challenge


class APIKey(_Auth):
    """Sends an authgate API key (`X-API-Key`, or `Authorization: ApiKey ...`)."""

    def __init__(self, key: str, *, header: str = "X-API-Key", scheme: str | None = None):
        self._key = key
        self._header = "Authorization" if scheme else header
        self._value = f"{scheme} {key}" if scheme else key

    def __repr__(self) -> str:
        return f"APIKey(header={self._header!r})"

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers[self._header] = self._value
        yield request


class DPoPKey:
    """A client's DPoP key (ES256 by default), kept for the client's life (RFC 9449 §4)."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey | None = None) -> None:
        self._private = private_key or ec.generate_private_key(ec.SECP256R1())
        nums = self._private.public_key().public_numbers()
        size = (self._private.curve.key_size + 7) // 8
        crv = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        self.alg = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}[
            self._private.curve.name
        ]
        self.jwk = {
            "kty": "EC",
            "crv": crv[self._private.curve.name],
            "x": b64url(nums.x.to_bytes(size, "big")),
            "y": b64url(nums.y.to_bytes(size, "big")),
        }
        self.thumbprint = thumbprint(self.jwk)

    def __repr__(self) -> str:
        return f"DPoPKey(jkt={self.thumbprint!r})"

    def proof(
        self, method: str, url: str, *, access_token: str | None = None, nonce: str | None = None
    ) -> str:
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": method,
            "htu": normalize_htu(url),
            "iat": int(time.time()),
        }
        if access_token is not None:
            claims["ath"] = access_token_hash(access_token)
        if nonce is not None:
            claims["nonce"] = nonce
        return pyjwt.encode(
            claims, self._private, algorithm=self.alg, headers={"typ": "dpop+jwt", "jwk": self.jwk}
        )


class TokenError(Exception):
    """The token endpoint refused or answered garbage (no secret in the message)."""


@dataclass(frozen=True)
class _Token:
    value: str = field(repr=False)
    token_type: str
    expires_at: float


class ClientCredentials(_Auth):
    """OAuth 2.0 client credentials (RFC 6749 §4.4), for sync and async clients.

    Tokens are fetched on first use, cached until `refresh_before` seconds before they
    expire, and refreshed; a 401 from the API gets one retry with a fresh token. With
    `dpop=True` (or a `DPoPKey`) tokens are DPoP-bound and every request carries a proof,
    answering `use_dpop_nonce` challenges once.
    """

    requires_response_body = True

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scope: str | None = None,
        resource: str | None = None,
        auth_method: Literal["client_secret_basic", "client_secret_post"] = "client_secret_basic",
        dpop: bool | DPoPKey = False,
        refresh_before: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.scope = scope
        self.resource = resource
        self.auth_method = auth_method
        self.dpop_key = dpop if isinstance(dpop, DPoPKey) else DPoPKey() if dpop else None
        self.refresh_before = refresh_before
        self._clock = clock
        self._token: _Token | None = None
        self._nonces: dict[str, str] = {}  # origin -> last DPoP-Nonce
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ClientCredentials({self.token_url!r}, client_id={self.client_id!r})"

    # -- token endpoint --------------------------------------------------------------------

    def _token_request(self, request: httpx2.Request) -> httpx2.Request:
        form = {"grant_type": "client_credentials"}
        if self.scope:
            form["scope"] = self.scope
        if self.resource:
            form["resource"] = self.resource
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        if self.auth_method == "client_secret_basic":
            pair = f"{quote(self.client_id, safe='')}:{quote(self._secret, safe='')}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self.client_id, "client_secret": self._secret}
        if self.dpop_key is not None:
            headers["DPoP"] = self.dpop_key.proof(
                "POST", self.token_url, nonce=self._nonces.get(_origin(self.token_url))
            )
        # The token request goes through the caller's client: a request of its own library.
        return type(request)("POST", self.token_url, headers=headers, content=urlencode(form))

    def _token_from(self, response: httpx2.Response) -> _Token:
        if response.status_code != 200:
            error = _json(response).get("error", "")
            raise TokenError(f"token endpoint answered {response.status_code} {error}".strip())
        data = _json(response)
        value, kind = data.get("access_token"), str(data.get("token_type", "")).lower()
        if not isinstance(value, str) or kind not in ("bearer", "dpop"):
            raise TokenError("token endpoint answered without a usable access token")
        if self.dpop_key is not None and kind != "dpop":
            raise TokenError("asked for a DPoP-bound token, got a bearer token")
        lifetime = data.get("expires_in")
        lifetime = float(lifetime) if isinstance(lifetime, (int, float)) else 300.0
        return _Token(value, "DPoP" if kind == "dpop" else "Bearer", self._clock() + lifetime)

    def _fresh(self) -> _Token | None:
        with self._lock:
            token = self._token
        if token is not None and token.expires_at - self.refresh_before > self._clock():
            return token
        return None

    def _fetch(self, request: httpx2.Request) -> Generator[httpx2.Request, httpx2.Response, _Token]:
        response = yield self._token_request(request)
        if self._took_nonce(self.token_url, response):
            response = yield self._token_request(request)  # once, with the server's nonce
        token = self._token_from(response)
        with self._lock:
            self._token = token
        return token

    def _took_nonce(self, url: str, response: httpx2.Response) -> bool:
        nonce = response.headers.get("DPoP-Nonce")
        if self.dpop_key is None or not nonce:
            return False
        self._nonces[_origin(url)] = nonce
        if response.status_code not in (400, 401):
            return False
        body = response.headers.get("WWW-Authenticate", "") + response.text[:500]
        return "use_dpop_nonce" in body

    # -- the API request -------------------------------------------------------------------

    def _authorize(self, request: httpx2.Request, token: _Token) -> httpx2.Request:
        request.headers["Authorization"] = f"{token.token_type} {token.value}"
        if self.dpop_key is not None:
            url = str(request.url)
            request.headers["DPoP"] = self.dpop_key.proof(
                request.method, url, access_token=token.value, nonce=self._nonces.get(_origin(url))
            )
        return request

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        token = self._fresh()
        if token is None:
            token = yield from self._fetch(request)
        response = yield self._authorize(request, token)
        if self._took_nonce(str(request.url), response):
            response = yield self._authorize(request, token)
        if response.status_code == 401 and "use_dpop_nonce" not in response.headers.get(
            "WWW-Authenticate", ""
        ):
            # The token may have been revoked or rotated away early: one fresh try.
            token = yield from self._fetch(request)
            yield self._authorize(request, token)


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin(url: str) -> str:
    u = urlsplit(url)
    port = None if u.port == _DEFAULT_PORTS.get(u.scheme) else u.port
    return f"{u.scheme}://{u.hostname}:{port or ''}"


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        data = strict_json.loads(response.content)
    except ValueError:  # also NaN and infinities: `expires_in: Infinity` kept a token forever
        return {}
    return data if isinstance(data, dict) else {}

"""JWTs minted by hand for the scale benchmarks: many distinct tokens, fast.

PyJWT's `encode` costs tens of µs of Python per token before any signing; here the
header segment is encoded once per issuer and only the payload and the signature are
made per token. Minting always happens outside the timing.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from asgi_auth import JWTAuth
from asgi_auth.http import HTTP

AUDIENCE = "api"
SCOPE = "items:read"
_ECDSA = ec.ECDSA(hashes.SHA256())


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _segment(obj: dict[str, Any]) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


class Issuer:
    """One issuer and its signing key (ES256, or HS256 with a static secret)."""

    def __init__(self, issuer: str, alg: str = "ES256", *, secret: bytes | None = None) -> None:
        if alg not in ("ES256", "HS256"):
            raise ValueError("ES256 or HS256")
        self.issuer = issuer
        self.alg = alg
        self.kid = "k1"
        self._ec = ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else None
        self._secret = (secret or os.urandom(32)) if alg == "HS256" else b""
        self._head = _segment({"alg": alg, "typ": "JWT", "kid": self.kid})
        self._now = int(time.time())

    def auth(self, *, max_cache_entries: int | None = None, http: HTTP | None = None) -> JWTAuth:
        """The `JWTAuth` that accepts this issuer's tokens (static key, no I/O), with
        the default cache size unless one is given. Passing `http` shares one client
        (and its TLS context, costly to make) between many instances."""
        key: Any = self._ec.public_key() if self._ec is not None else self._secret
        options: dict[str, Any] = {"http": http}
        if max_cache_entries is not None:
            options["max_cache_entries"] = max_cache_entries
        return JWTAuth(self.issuer, AUDIENCE, algorithms=[self.alg], keys=key, **options)

    def _payload(self, n: int) -> str:
        now = self._now
        return _segment(
            {
                "iss": self.issuer,
                "aud": AUDIENCE,
                "sub": f"user-{n}",
                "jti": f"t{n}",
                "iat": now,
                "exp": now + 3600,
                "scope": SCOPE,
            }
        )

    def _sign(self, signing_input: bytes) -> bytes:
        if self._ec is None:
            return hmac.digest(self._secret, signing_input, "sha256")
        r, s = decode_dss_signature(self._ec.sign(signing_input, _ECDSA))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def token(self, n: int) -> str:
        """Token number `n`: distinct `sub` and `jti` per n, valid for an hour."""
        head = f"{self._head}.{self._payload(n)}"
        return f"{head}.{b64url(self._sign(head.encode('ascii')))}"

    def forged(self, n: int) -> str:
        """As `token(n)`, well-formed, but with a random signature of the right length."""
        head = f"{self._head}.{self._payload(n)}"
        return f"{head}.{b64url(os.urandom(64 if self._ec is not None else 32))}"

    def tokens(self, start: int, count: int, *, valid: bool = True) -> Iterator[str]:
        mint = self.token if valid else self.forged
        for n in range(start, start + count):
            yield mint(n)

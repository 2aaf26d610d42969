"""A DPoP client for tests: an ES256 (or given) key and proofs made with PyJWT (not
authgate)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def thumbprint_of(jwk: dict[str, Any]) -> str:
    """RFC 7638 thumbprint, computed here independently of authgate."""
    members = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x")}
    canonical = json.dumps({k: jwk[k] for k in members[jwk["kty"]]}, separators=(",", ":"))
    return _b64(hashlib.sha256(canonical.encode()).digest())


def _uint(value: int) -> str:
    return _b64(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def rsa_key_with_exponent(bits: int, e_bits: int) -> tuple[rsa.RSAPrivateKey, dict[str, str]]:
    """An RSA key whose public exponent has `e_bits` bits (65537 has 17), and its public
    JWK: no tool makes one, but anyone can send one. Only its size matters, not its value."""
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=bits).private_numbers()
    p, q = numbers.p, numbers.q
    n, phi = p * q, (p - 1) * (q - 1)
    e = (1 << (e_bits - 1)) | 1
    while math.gcd(e, phi) != 1:  # the next odd number: phi has few small factors
        e += 2
    d = pow(e, -1, phi)
    public = rsa.RSAPublicNumbers(e, n)
    private = rsa.RSAPrivateNumbers(p, q, d, d % (p - 1), d % (q - 1), pow(q, -1, p), public)
    return private.private_key(), {"kty": "RSA", "n": _uint(n), "e": _uint(e)}


class DPoPKey:
    """An ES256 key by default; or `private` with its public `jwk`, signing with `alg`."""

    def __init__(
        self, private: Any = None, jwk: dict[str, str] | None = None, alg: str = "ES256"
    ) -> None:
        if private is None:
            private = ec.generate_private_key(ec.SECP256R1())
            nums = private.public_key().public_numbers()
            jwk = {
                "kty": "EC",
                "crv": "P-256",
                "x": _b64(nums.x.to_bytes(32, "big")),
                "y": _b64(nums.y.to_bytes(32, "big")),
            }
        assert jwk is not None
        self.private = private
        self.jwk = jwk
        self.alg = alg
        self.jkt = thumbprint_of(jwk)

    def proof(self, method: str, url: str, token: str | None = None, **over: Any) -> str:
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(12),
            "htm": method,
            "htu": url,
            "iat": int(time.time()),
        }
        if token is not None:
            claims["ath"] = _b64(hashlib.sha256(token.encode()).digest())
        claims.update(over)
        claims = {k: v for k, v in claims.items() if v is not None}
        headers = {"typ": "dpop+jwt", "jwk": self.jwk}
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=headers)

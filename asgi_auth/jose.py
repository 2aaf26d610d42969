"""Strict, cheap JWS parsing and signature checks over `cryptography`.

Why not `jwt.decode`: PyJWT validates each base64url segment with a per-character Python
loop that costs more than an RSA verification, and re-resolves the algorithm on every
call. Here a token is split once, decoded with `binascii` in strict mode, and verified
with a key object prepared when the key set was loaded. PyJWT still parses JWKs.
"""

from __future__ import annotations

import binascii
import hmac
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509 import load_pem_x509_certificate

from .errors import InvalidToken

_B64URL = str.maketrans("-_", "+/")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_CURVES = {
    "ES256": "secp256r1",
    "ES384": "secp384r1",
    "ES512": "secp521r1",
    "ES256K": "secp256k1",
}
_EC_SIZES = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66, "secp256k1": 32}

#: Every algorithm authgate verifies. `none` is not, and never will be, among them.
ALGORITHMS = frozenset(
    {
        *(f"{f}{n}" for f in ("RS", "PS", "ES", "HS") for n in ("256", "384", "512")),
        "ES256K",
        "EdDSA",
        "Ed25519",
        "Ed448",
    }
)
ASYMMETRIC = ALGORITHMS - {"HS256", "HS384", "HS512"}


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Unused low bits of the last character for each length mod 4 (1 is never valid).
_SPARE_BITS = {2: 0b1111, 3: 0b11}


def b64decode(segment: str) -> bytes:
    """Strict base64url (RFC 7515 §2): no padding, no whitespace, no foreign characters,
    and canonical (unused trailing bits zero), so one value has exactly one encoding and
    no token can be altered without changing what it says."""
    if "=" in segment:
        raise binascii.Error("padding")
    spare = _SPARE_BITS.get(len(segment) % 4)
    if spare is not None and _ALPHABET.find(segment[-1]) & spare:
        raise binascii.Error("non-canonical encoding")
    return binascii.a2b_base64(
        segment.translate(_B64URL) + "=" * (-len(segment) % 4), strict_mode=True
    )


class TokenError(InvalidToken):
    """A JWT failed a check; the description says which, for the client."""

    scheme = "Bearer"


@dataclass(frozen=True, slots=True)
class JWS:
    header: Mapping[str, Any]
    payload: Mapping[str, Any]
    signing_input: bytes
    signature: bytes


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(b64decode(segment))
    except (binascii.Error, ValueError, RecursionError):
        raise TokenError(f"malformed token {what}", reason="malformed_token") from None
    if not isinstance(value, dict):
        raise TokenError(f"malformed token {what}", reason="malformed_token")
    return value


def parse_jws(token: str) -> JWS:
    """Split a compact JWS; raises `TokenError` for anything else (JWE has 5 parts)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a signed JWT", reason="malformed_token")
    h, p, s = parts
    header = _json_object(h, "header")
    payload = _json_object(p, "payload")
    try:
        signature = b64decode(s)
    except binascii.Error:
        raise TokenError("malformed token signature", reason="malformed_token") from None
    return JWS(header, payload, f"{h}.{p}".encode("ascii"), signature)


def peek_payload(token: str) -> dict[str, Any] | None:
    """The unverified payload, only to choose an issuer; None if it is not a JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return _json_object(parts[1], "payload")
    except TokenError:
        return None


Verifier = Callable[[bytes, bytes], bool]


class VerifyKey:
    """One verification key, prepared once: type checks and algorithm fit done at load."""

    __slots__ = ("_key", "active", "alg", "kid", "kty", "use")

    def __init__(
        self,
        key: Any,
        *,
        kid: str | None = None,
        alg: str | None = None,
        use: str | None = None,
    ) -> None:
        if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
            key = key.public_key()
        if isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
            key = key.public_key()
        if isinstance(key, rsa.RSAPublicKey):
            if key.key_size < 2048:
                raise ValueError("RSA keys must be at least 2048 bits")
            self.kty = "RSA"
        elif isinstance(key, ec.EllipticCurvePublicKey):
            self.kty = "EC"
        elif isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            self.kty = "OKP"
        elif isinstance(key, bytes):
            if len(key) < 32:
                raise ValueError("HMAC secrets must be at least 32 bytes (RFC 7518 §3.2)")
            self.kty = "oct"
        else:
            raise TypeError(f"unsupported key type: {type(key).__name__}")
        self._key = key
        self.kid = kid
        self.alg = alg
        self.use = use
        #: False once the key left its key set: cached tokens it verified stop counting.
        self.active = True

    def __repr__(self) -> str:
        return f"VerifyKey(kty={self.kty!r}, kid={self.kid!r}, alg={self.alg!r})"

    def public_bytes(self) -> bytes:
        """The key's public material, to tell whether a refetched key changed."""
        if self.kty == "oct":
            return bytes(self._key)
        return bytes(
            self._key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )

    def fits(self, alg: str) -> bool:
        """Whether this key may verify `alg`: the family must match (no HMAC with a
        public key, RFC 8725 §3.1), and so must the curve and any `alg` the JWK names."""
        if self.alg is not None and self.alg != alg:
            return False
        if self.use is not None and self.use != "sig":
            return False
        key = self._key
        fam = alg[:2]
        if fam in ("RS", "PS"):
            return self.kty == "RSA"
        if fam == "HS":
            return self.kty == "oct"
        if fam == "ES":
            return self.kty == "EC" and key.curve.name == _EC_CURVES.get(alg)
        if alg in ("EdDSA", "Ed25519", "Ed448"):
            if alg == "Ed25519":
                return isinstance(key, ed25519.Ed25519PublicKey)
            if alg == "Ed448":
                return isinstance(key, ed448.Ed448PublicKey)
            return self.kty == "OKP"
        return False

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        key = self._key
        try:
            fam = alg[:2]
            if fam == "RS":
                key.verify(signature, signing_input, padding.PKCS1v15(), _HASHES[alg[2:]]())
            elif fam == "PS":
                h = _HASHES[alg[2:]]()
                key.verify(
                    signature,
                    signing_input,
                    padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size),
                    h,
                )
            elif fam == "ES":
                size = _EC_SIZES[key.curve.name]
                if len(signature) != 2 * size:
                    return False
                der = encode_dss_signature(
                    int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big")
                )
                h = hashes.SHA256() if alg == "ES256K" else _HASHES[alg[2:]]()
                key.verify(der, signing_input, ec.ECDSA(h))
            elif fam == "HS":
                mac = hmac.new(key, signing_input, _HASHES[alg[2:]]().name).digest()
                return hmac.compare_digest(mac, signature)
            else:
                key.verify(signature, signing_input)
        except InvalidSignature:
            return False
        return True


def load_static_key(material: Any, *, kid: str | None = None) -> list[VerifyKey]:
    """Keys from configuration: PEM (public key or certificate), a JWK or JWKS dict, a
    `cryptography` key object, or bytes (an HMAC secret)."""
    if isinstance(material, Mapping):
        if "keys" in material:
            return [k for jwk in material["keys"] for k in load_static_key(jwk)]
        return [jwk_to_key(material, allow_oct=True)]
    if isinstance(material, str) and material.lstrip().startswith("-----BEGIN"):
        material = material.encode()
    if isinstance(material, bytes) and material.lstrip().startswith(b"-----BEGIN"):
        if b"CERTIFICATE" in material:
            return [VerifyKey(load_pem_x509_certificate(material).public_key(), kid=kid)]
        return [VerifyKey(serialization.load_pem_public_key(material), kid=kid)]
    if isinstance(material, str):
        material = material.encode()
    return [VerifyKey(material, kid=kid)]


def jwk_to_key(jwk: Mapping[str, Any], *, allow_oct: bool = False) -> VerifyKey:
    """A `VerifyKey` from one JWK (RFC 7517); raises ValueError for anything unusable."""
    from jwt.algorithms import ECAlgorithm, HMACAlgorithm, OKPAlgorithm, RSAAlgorithm
    from jwt.exceptions import InvalidKeyError

    kty = jwk.get("kty")
    kid = jwk.get("kid")
    alg = jwk.get("alg")
    use = jwk.get("use")
    if kid is not None and (not isinstance(kid, str) or len(kid) > 256):
        raise ValueError("bad kid")
    if alg is not None and alg not in ALGORITHMS:
        raise ValueError("unsupported alg")
    data = json.dumps(dict(jwk))
    try:
        if kty == "RSA":
            key: Any = RSAAlgorithm.from_jwk(data)
        elif kty == "EC":
            key = ECAlgorithm.from_jwk(data)
        elif kty == "OKP":
            key = OKPAlgorithm.from_jwk(data)
        elif kty == "oct" and allow_oct:
            key = HMACAlgorithm.from_jwk(data)
        else:
            raise ValueError(f"unsupported kty {kty!r}")
    except (InvalidKeyError, KeyError, TypeError) as exc:
        raise ValueError(f"bad {kty} key: {type(exc).__name__}") from None
    return VerifyKey(key, kid=kid, alg=alg, use=use)

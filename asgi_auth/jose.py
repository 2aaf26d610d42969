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
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509 import load_pem_x509_certificate

from .errors import InvalidToken
from .strict_json import DECODER, scan_once

# '-' and '_' become the standard alphabet's '+' and '/'; a '+' or '/' in the token itself
# becomes '!', which strict decoding refuses: base64url has no '+' or '/' (RFC 4648 §5),
# and accepting them would let a token be re-spelled without changing what it decodes to.
_B64URL = bytes.maketrans(b"-_+/", b"+/!!")
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
#: RFC 7518 §3.2: an HMAC secret at least as long as the hash output.
HMAC_MIN_BYTES = {"256": 32, "384": 48, "512": 64}
_EC_CURVES = {
    "ES256": "secp256r1",
    "ES384": "secp384r1",
    "ES512": "secp521r1",
    "ES256K": "secp256k1",
}
_EC_SIZES = {"secp256r1": 32, "secp384r1": 48, "secp521r1": 66, "secp256k1": 32}
#: RSA keys: a modulus of 2048 bits at least (RFC 7518 §3.3) and at most 8192 (a check
#: costs about the square of its size), and an odd public exponent from 3 up to 33 bits
#: (BoringSSL's bound; keys in use have 65537). A check costs about one multiplication
#: per bit of the exponent: with a 3071-bit one (any client may send such a DPoP `jwk`)
#: a 3072-bit check took ~5 ms, with 65537 ~0.09 ms.
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
RSA_MAX_EXPONENT_BITS = 33

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


_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# For each length mod 4, the bytes that may end a canonical encoding: those whose unused
# low bits are zero (length mod 4 == 1 is never valid, and fails in a2b_base64).
_CANONICAL_LAST = (
    frozenset(_ALPHABET),
    frozenset(_ALPHABET),
    frozenset(c for i, c in enumerate(_ALPHABET) if not i & 0b1111),
    frozenset(c for i, c in enumerate(_ALPHABET) if not i & 0b11),
)
_PAD = (b"", b"===", b"==", b"=")


def b64decode(segment: str | bytes) -> bytes:
    """Strict base64url (RFC 7515 §2): no padding, no whitespace, no '+' or '/', no
    foreign characters, and canonical (unused trailing bits zero), so one value has
    exactly one encoding and no token can be altered without changing what it says."""
    if type(segment) is not bytes:
        # isascii first: a UnicodeEncodeError would carry the segment in the error chain.
        if not segment.isascii():
            raise binascii.Error("non-ASCII")
        segment = segment.encode("ascii")  # type: ignore[union-attr]
    n = len(segment)
    # strict_mode refuses '=' anywhere but at the end, so only the end needs a look.
    if not n or segment[-1] not in _CANONICAL_LAST[n & 3]:
        raise binascii.Error("padding, empty or non-canonical encoding")
    # bytes.translate is a C table lookup; str.translate costs ~6 µs on a token.
    return binascii.a2b_base64(segment.translate(_B64URL) + _PAD[n & 3], strict_mode=True)


class TokenError(InvalidToken):
    """A JWT failed a check; the description says which, for the client."""

    scheme = "Bearer"


def json_segment(segment: str | bytes, what: str) -> dict[str, Any]:
    """A base64url segment holding a JSON object, or `TokenError`."""
    value: Any = None
    try:
        text = b64decode(segment).decode("utf-8")
        # The C scanner alone; the full decoder only when the scanner stops short, or
        # cannot start: JSON allows whitespace around the value. Both strict: no NaN or
        # infinity (see strict_json).
        try:
            value, end = scan_once(text, 0)
        except StopIteration:
            end = -1
        if end != len(text):
            value = DECODER.decode(text)
    except (binascii.Error, ValueError, RecursionError):
        value = None
    # Raised here, not in the handler: a decoding error holds the decoded segment (which
    # `from None` only hides), and the error we raise must not lead back to it.
    if type(value) is not dict:
        raise TokenError(f"malformed token {what}", reason="malformed_token")
    return value


def signature_segment(segment: str | bytes) -> bytes:
    try:
        return b64decode(segment)
    except binascii.Error:
        pass
    raise TokenError("malformed token signature", reason="malformed_token")


def split_jws(token: str) -> list[str]:
    """The three segments of a compact JWS; `TokenError` for anything else (a JWE has 5)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("not a signed JWT", reason="malformed_token")
    return parts


def peek_payload(token: str) -> dict[str, Any] | None:
    """The unverified payload, only to choose an issuer; None if it is not a JWS."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        return json_segment(parts[1], "payload")
    except TokenError:
        return None


Verifier = Callable[[bytes, bytes], bool]


class VerifyKey:
    """One verification key, prepared once: type checks and algorithm fit done at load."""

    __slots__ = ("_key", "_verifiers", "alg", "kid", "kty", "until", "use")

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
            if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
                raise ValueError(f"RSA keys must have {RSA_MIN_BITS} to {RSA_MAX_BITS} bits")
            e = key.public_numbers().e
            if e < 3 or not e & 1 or e.bit_length() > RSA_MAX_EXPONENT_BITS:
                raise ValueError(
                    f"RSA public exponents must be odd, 3 or more, of {RSA_MAX_EXPONENT_BITS}"
                    " bits at most"
                )
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
        #: When tokens this key verified stop counting, cached or not (see `cache.Guard`):
        #: the end of its grace while the issuer's answers lack it, -inf once it is gone.
        self.until = float("inf")
        self._verifiers: dict[str, Verifier] = {}

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
            # RFC 7518 §3.2: a secret at least as long as the hash output (32/48/64 bytes).
            return self.kty == "oct" and len(key) >= HMAC_MIN_BYTES[alg[2:]]
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
        """Check a signature made with `alg`; call only after `fits(alg)`."""
        check = self._verifiers.get(alg)
        if check is None:
            check = self._verifiers[alg] = self._verifier(alg)
        return check(signing_input, signature)

    def _verifier(self, alg: str) -> Verifier:
        # Built once per key and algorithm: padding and hash objects are reused, and each
        # check is one Python frame around the `cryptography` call.
        key = self._key
        fam = alg[:2]
        if fam == "HS":
            name = _HASHES[alg[2:]]().name
            return lambda m, s: hmac.compare_digest(hmac.digest(key, m, name), s)
        if fam == "RS" or fam == "PS":
            h = _HASHES[alg[2:]]()
            pad: Any = (
                padding.PKCS1v15()
                if fam == "RS"
                else padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size)
            )

            def rsa_check(m: bytes, s: bytes) -> bool:
                try:
                    key.verify(s, m, pad, h)
                except InvalidSignature:
                    return False
                return True

            return rsa_check
        if fam == "ES":
            size = _EC_SIZES[key.curve.name]
            ecdsa = ec.ECDSA(hashes.SHA256() if alg == "ES256K" else _HASHES[alg[2:]]())

            def ec_check(m: bytes, s: bytes) -> bool:
                if len(s) != 2 * size:
                    return False
                r, t = int.from_bytes(s[:size], "big"), int.from_bytes(s[size:], "big")
                try:
                    key.verify(encode_dss_signature(r, t), m, ecdsa)
                except InvalidSignature:
                    return False
                return True

            return ec_check

        def ed_check(m: bytes, s: bytes) -> bool:
            try:
                key.verify(s, m)
            except InvalidSignature:
                return False
            return True

        return ed_check


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

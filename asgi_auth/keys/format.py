"""The API key format: `<prefix>_<id><secret><checksum>`, all base62.

Modelled on GitHub's tokens: a fixed prefix lets secret scanners find leaked keys, the
12-character id is read without any lookup, and a CRC32 checksum over everything before
it rejects typos and random garbage before a key store is asked (no I/O for junk).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
ID_LEN = 12  # ~71 bits: random ids never collide in practice, and collisions are retried
SECRET_LEN = 32  # ~190 bits of entropy
CHECKSUM_LEN = 6  # 62**6 > 2**32, so a CRC32 always fits
BODY_LEN = ID_LEN + SECRET_LEN + CHECKSUM_LEN
DEFAULT_PREFIX = "agk"
PREFIX_RE = re.compile(r"[a-z][a-z0-9]{0,15}")


class KeyFormatError(ValueError):
    """The text is not a well-formed key; `reason` says why (never includes the key)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_prefix(prefix: str) -> str:
    if not PREFIX_RE.fullmatch(prefix):
        raise ValueError(
            "key prefix must be 1-16 lowercase letters or digits, starting with a letter"
        )
    return prefix


def _base62(n: int, width: int) -> str:
    out = []
    for _ in range(width):
        n, r = divmod(n, 62)
        out.append(ALPHABET[r])
    return "".join(reversed(out))


def _checksum(head: str) -> str:
    return _base62(zlib.crc32(head.encode("ascii")), CHECKSUM_LEN)


def _random(n: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(n))


def new_key_id() -> str:
    return _random(ID_LEN)


def new_secret() -> str:
    return _random(SECRET_LEN)


def assemble(prefix: str, key_id: str, secret: str) -> str:
    head = f"{prefix}_{key_id}{secret}"
    return head + _checksum(head)


def parse(key: str, prefixes: frozenset[str] | None = None) -> tuple[str, str, str]:
    """Split a key into `(prefix, key_id, secret)`, or raise `KeyFormatError`.

    Pure CPU, no lookup: the checksum catches typos, truncation and made-up keys.
    """
    prefix, sep, body = key.rpartition("_")
    if not sep or not prefix:
        raise KeyFormatError("malformed", "API key has no prefix")
    if prefixes is not None:
        if prefix not in prefixes:  # an allow-list of well-formed prefixes
            raise KeyFormatError("wrong_prefix", "API key has an unknown prefix")
    elif not PREFIX_RE.fullmatch(prefix):
        # Without an allow-list (`KeyStore.add`), a prefix no key can be issued with
        # (`a_b`, `Live`) is not one to store and bind the key to.
        raise KeyFormatError("malformed", "API key prefix is malformed")
    if len(body) != BODY_LEN or not (body.isascii() and body.isalnum()):
        raise KeyFormatError("malformed", "API key is malformed")
    head = key[:-CHECKSUM_LEN]
    if not hmac.compare_digest(_checksum(head), body[-CHECKSUM_LEN:]):
        raise KeyFormatError("bad_checksum", "API key checksum does not match")
    return prefix, body[:ID_LEN], body[ID_LEN:-CHECKSUM_LEN]


def hash_secret(hash_key: bytes, key_id: str, secret: str) -> bytes:
    """Keyed hash (HMAC-SHA256) under which a secret is stored; binds the id too."""
    return hmac.new(hash_key, f"{key_id}.{secret}".encode("ascii"), hashlib.sha256).digest()

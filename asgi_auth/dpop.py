"""DPoP proof checks (RFC 9449): sender-constrained access tokens.

A DPoP proof is a JWT the client signs with its own key for each request. The resource
server checks it (§4.3, §7.1) and that the access token is bound to the same key
(`cnf.jkt`, the RFC 7638 thumbprint). Pure CPU and framework-free: the middleware hands
in the method, the URL and the header; a replay cache (pluggable, bounded) remembers
`jti`s for as long as a proof could be accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import threading
import time
from base64 import urlsafe_b64encode
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit, urlunsplit

from .authenticator import require_durations, require_timeouts
from .errors import AuthError, Challenge
from .jose import ASYMMETRIC, VerifyKey, json_segment, jwk_to_key, signature_segment, split_jws

if TYPE_CHECKING:
    from .dpop_redis import RedisReplayCache as RedisReplayCache

DEFAULT_ALGS = ("ES256", "EdDSA", "Ed25519", "RS256", "PS256", "ES384")
_THUMBPRINT_MEMBERS = {
    "RSA": ("e", "kty", "n"),
    "EC": ("crv", "kty", "x", "y"),
    "OKP": ("crv", "kty", "x"),
}
_PRIVATE_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})


class DPoPError(AuthError):
    """401 `invalid_dpop_proof` with a `DPoP` challenge (RFC 9449 §7.1, §12.2)."""

    error = "invalid_dpop_proof"
    scheme = "DPoP"


class UseDPoPNonce(DPoPError):
    """401 `use_dpop_nonce` with a fresh `DPoP-Nonce` header (RFC 9449 §9)."""

    error = "use_dpop_nonce"

    def __init__(self, nonce: str) -> None:
        super().__init__("resource server requires a nonce in the DPoP proof", reason="dpop_nonce")
        self.nonce = nonce

    def headers(self, challenges: Any) -> list[tuple[str, str]]:
        return [*super().headers(challenges), ("DPoP-Nonce", self.nonce)]


def b64url(data: bytes) -> str:
    return urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url) of a public key."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or any(not isinstance(jwk.get(m), str) for m in members):
        raise ValueError("unsupported or incomplete JWK")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def access_token_hash(token: str) -> str:
    """The `ath` claim: base64url(SHA-256(access token)) (RFC 9449 §4.2)."""
    return b64url(hashlib.sha256(token.encode("ascii")).digest())


@lru_cache(maxsize=1024)  # a client and an API repeat a handful of URLs; bounded
def normalize_htu(url: str) -> str:
    """Scheme and host lowercased, default port dropped, query and fragment removed
    (RFC 9449 §4.3 point 9, RFC 3986 §6.2.2-§6.2.3)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port is not None and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return urlunsplit((scheme, host, parts.path or "/", "", ""))


class ReplayCache(Protocol):
    """Remembers proof `jti`s; a shared store (`RedisReplayCache`) does it across processes.

    The verifier passes `"<proof key thumbprint>:<jti>"`. `htu` is not part of it: it is
    signed in the proof, so a replayed proof carries the same one, and leaving it out
    refuses a `jti` a client reuses for another URL too (stricter than `jti` and `htu`).
    An implementation may raise `ServiceUnavailable` (a 503) when it cannot tell, and may
    add `async def aseen(jti, expires_at) -> bool`, which the ASGI middleware awaits
    instead (so that its I/O does not block the event loop)."""

    def seen(self, jti: str, expires_at: float) -> bool:
        """True if `jti` was seen before; otherwise remember it until `expires_at`."""
        ...


def __getattr__(name: str) -> Any:
    if name == "RedisReplayCache":
        # Loaded on first use: raises ImportError naming `pip install 'authgate[redis]'`
        # without redis-py, and the core imports without it.
        from .dpop_redis import RedisReplayCache

        return RedisReplayCache
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class MemoryReplayCache:
    """A bounded in-process `ReplayCache`. When full, expired entries go first, then the
    oldest: an evicted `jti` could be replayed only within its short window."""

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def seen(self, jti: str, expires_at: float) -> bool:
        with self._lock:
            seen = self._seen
            if jti in seen and seen[jti] > self._clock():
                return True
            if len(seen) >= self.max_entries:
                now = self._clock()
                for k in [k for k, exp in seen.items() if exp <= now] or list(seen)[
                    : len(seen) // 4
                ]:
                    del seen[k]
            seen[jti] = expires_at
            return False


class DPoPVerifier:
    """Checks DPoP proofs for one token authenticator.

    - `algorithms`: asymmetric algorithms a proof may use (also sent as `algs=` in the
      challenge);
    - `max_age` / `leeway`: how old, and how far in the future, a proof's `iat` may be;
    - `replay_cache`: where `jti`s are remembered (in-process by default);
    - `require_nonce`: demand server-issued nonces (RFC 9449 §8-9). A nonce is good for
      its `nonce_lifetime` period and the next one, however quiet the server; it is
      derived from `nonce_secret` (32 bytes or more; random per process by default), so
      every process given the same secret issues and accepts the same nonces.
    """

    def __init__(
        self,
        *,
        algorithms: Iterable[str] = DEFAULT_ALGS,
        max_age: float = 300.0,
        leeway: float = 5.0,
        replay_cache: ReplayCache | None = None,
        require_nonce: bool = False,
        nonce_lifetime: float = 300.0,
        nonce_secret: bytes | None = None,
        max_proof_bytes: int = 8192,
        clock: Callable[[], float] = time.time,
    ) -> None:
        algs = tuple(algorithms)
        bad = set(algs) - ASYMMETRIC
        if not algs or bad:
            raise ValueError(f"DPoP algorithms must be asymmetric, not {sorted(bad)}")
        require_durations("DPoPVerifier", max_age=max_age, leeway=leeway)
        require_timeouts("DPoPVerifier", nonce_lifetime=nonce_lifetime)
        if nonce_secret is None:
            nonce_secret = secrets.token_bytes(32)
        elif type(nonce_secret) is not bytes:
            raise TypeError("nonce_secret must be bytes")
        elif len(nonce_secret) < 32:  # RFC 2104 §3: not shorter than the hash output
            raise ValueError("nonce_secret must be at least 32 bytes")
        self.algorithms = frozenset(algs)
        self.algs_param = " ".join(algs)
        self.max_age = max_age
        self.leeway = leeway
        self.require_nonce = require_nonce
        self.nonce_lifetime = nonce_lifetime
        self.max_proof_bytes = max_proof_bytes
        self._clock = clock
        self.replay_cache = replay_cache or MemoryReplayCache(clock=clock)
        self._headers: dict[str, tuple[str, VerifyKey, str]] = {}
        self._nonce_secret = nonce_secret
        self._nonce_label = f"authgate DPoP-Nonce {float(nonce_lifetime)!r} "
        # (period, its nonce, the previous period's): replaced whole, never mutated.
        self._nonces: tuple[float, str, str] = (float("-inf"), "", "")

    def _nonce_for(self, period: int) -> str:
        # Derived from the secret and the period, never stored: every process holding the
        # secret issues and accepts the same nonces, and as a proof's nonce is compared
        # with those of this period and the last only, none outlives them, however long
        # the server was quiet.
        message = (self._nonce_label + str(period)).encode("ascii")
        return b64url(hmac.digest(self._nonce_secret, message, "sha256"))

    def _nonces_now(self) -> tuple[float, str, str]:
        period = int(self._clock() // self.nonce_lifetime)
        memo = self._nonces
        if memo[0] != period:  # once per period (per process), not per request
            previous = memo[1] if memo[0] == period - 1 else self._nonce_for(period - 1)
            self._nonces = memo = (period, self._nonce_for(period), previous)
        return memo

    def current_nonce(self) -> str:
        """The nonce to hand out now (`DPoP-Nonce`)."""
        return self._nonces_now()[1]

    def _nonce_ok(self, nonce: object) -> bool:
        """The nonce of this period or the previous one, and no other (RFC 9449 §9)."""
        _, current, previous = self._nonces_now()
        if type(nonce) is not str or not nonce.isascii():  # compare_digest takes ASCII only
            return False
        # Both compared, in constant time: no timing tells how close a guess came.
        return hmac.compare_digest(nonce, current) | hmac.compare_digest(nonce, previous)

    def _header(self, segment: str) -> tuple[str, VerifyKey, str]:
        known = self._headers.get(segment)
        if known is not None:
            return known
        header = json_segment(segment, "DPoP proof header")
        if header.get("typ") != "dpop+jwt":
            raise DPoPError("DPoP proof typ must be dpop+jwt", reason="dpop_typ")
        alg = header.get("alg")
        if type(alg) is not str or alg not in self.algorithms:
            raise DPoPError("DPoP proof algorithm not allowed", reason="dpop_alg")
        jwk = header.get("jwk")
        if type(jwk) is not dict or _PRIVATE_MEMBERS & jwk.keys():
            raise DPoPError("DPoP proof needs a public jwk", reason="dpop_jwk")
        try:
            key = jwk_to_key(jwk)
            jkt = thumbprint(jwk)
        except (ValueError, TypeError):
            raise DPoPError("DPoP proof jwk is unusable", reason="dpop_jwk") from None
        if not key.fits(alg):
            raise DPoPError("DPoP proof jwk does not fit its alg", reason="dpop_jwk")
        if "crit" in header:
            raise DPoPError("unsupported critical header", reason="dpop_crit")
        if len(self._headers) >= 1024:
            self._headers.clear()
        self._headers[segment] = result = (alg, key, jkt)
        return result

    def verify(
        self, proof: str, *, method: str, url: str, access_token: str | None, jkt: str | None
    ) -> str:
        """Check `proof` for a request; returns the proof key's thumbprint.

        `jkt` is the thumbprint the access token is bound to (`cnf.jkt`), if any.
        """
        proof_jkt, replay_key, expires_at = self._check(proof, method, url, access_token, jkt)
        if self.replay_cache.seen(replay_key, expires_at):
            raise DPoPError("DPoP proof replayed", reason="dpop_replay")
        return proof_jkt

    async def averify(
        self, proof: str, *, method: str, url: str, access_token: str | None, jkt: str | None
    ) -> str:
        """`verify` for an event loop: a replay cache with an `aseen` coroutine (Redis) is
        awaited, so its I/O never blocks the loop; any other is called as `verify` does."""
        proof_jkt, replay_key, expires_at = self._check(proof, method, url, access_token, jkt)
        aseen = getattr(self.replay_cache, "aseen", None)
        if aseen is not None:
            seen = bool(await aseen(replay_key, expires_at))
        else:
            seen = self.replay_cache.seen(replay_key, expires_at)
        if seen:
            raise DPoPError("DPoP proof replayed", reason="dpop_replay")
        return proof_jkt

    def _check(
        self, proof: str, method: str, url: str, access_token: str | None, jkt: str | None
    ) -> tuple[str, str, float]:
        """Everything but the replay check: `(proof key thumbprint, replay key, until)`."""
        if len(proof) > self.max_proof_bytes:
            raise DPoPError("DPoP proof too large", reason="dpop_malformed")
        try:
            h, p, s = split_jws(proof)
            alg, key, proof_jkt = self._header(h)
            claims = json_segment(p, "DPoP proof")
            signature = signature_segment(s)
        except DPoPError:
            raise
        except AuthError:
            raise DPoPError("malformed DPoP proof", reason="dpop_malformed") from None
        # The binding before the signature: a thumbprint comparison is cheap, a signature
        # check with any key a client sends is not, and a proof whose key is not the
        # token's is refused either way (RFC 9449 §4.3 point 12, §7.1).
        if jkt is not None and jkt != proof_jkt:
            raise DPoPError("DPoP proof key does not match the token binding", reason="dpop_jkt")
        if not key.verify(alg, f"{h}.{p}".encode("ascii"), signature):
            raise DPoPError("DPoP proof signature invalid", reason="dpop_signature")
        if claims.get("htm") != method:
            raise DPoPError("DPoP proof htm mismatch", reason="dpop_htm")
        htu = claims.get("htu")
        try:
            same = type(htu) is str and normalize_htu(htu) == normalize_htu(url)
        except ValueError:  # a bad port or host, in the proof or the Host header
            same = False
        if not same:
            raise DPoPError("DPoP proof htu mismatch", reason="dpop_htu")
        now = self._clock()
        iat = claims.get("iat")
        if (type(iat) is not int and type(iat) is not float) or not (
            now - self.max_age <= iat <= now + self.leeway
        ):
            raise DPoPError("DPoP proof iat outside the accepted window", reason="dpop_iat")
        if access_token is not None and claims.get("ath") != access_token_hash(access_token):
            raise DPoPError("DPoP proof ath does not match the token", reason="dpop_ath")
        if self.require_nonce and not self._nonce_ok(claims.get("nonce")):
            raise UseDPoPNonce(self.current_nonce())
        jti = claims.get("jti")
        if type(jti) is not str or not jti or len(jti) > 256:
            raise DPoPError("DPoP proof needs a jti", reason="dpop_jti")
        return proof_jkt, f"{proof_jkt}:{jti}", iat + self.max_age + self.leeway


def dpop_setup(
    mode: str,
    verifier: DPoPVerifier | None,
    bearer: Challenge,
    clock: Callable[[], float],
) -> tuple[DPoPVerifier | None, tuple[str, ...], tuple[Challenge, ...]]:
    """`(verifier, Authorization schemes, challenges)` of a token authenticator for its
    `dpop=` mode: "off" (Bearer only; bound tokens still refused), "allowed" (Bearer, and DPoP for
    bound tokens), "required" (DPoP only)."""
    if mode not in ("allowed", "required", "off"):
        raise ValueError("dpop must be 'allowed', 'required' or 'off'")
    if mode == "off":
        if verifier is not None:
            raise ValueError("dpop_verifier given with dpop='off'")
        return None, ("bearer",), (bearer,)
    verifier = verifier or DPoPVerifier(clock=clock)
    params = tuple(p for p in bearer.params if p[0] == "realm")
    dpop = Challenge("DPoP", (*params, ("algs", verifier.algs_param)))
    if mode == "required":
        return verifier, ("dpop",), (dpop,)
    return verifier, ("bearer", "dpop"), (bearer, dpop)

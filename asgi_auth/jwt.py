"""JWT bearer tokens (RFC 7519, RFC 9068) with a JWKS cache and OpenID discovery."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any, Literal

from .authenticator import (
    AUTHORIZATION_LABEL,
    RequestInfo,
    require_durations,
    require_timeouts,
    visible_ascii,
)
from .cache import HitCache
from .discovery import Metadata, get
from .dpop import DPoPVerifier, dpop_setup
from .errors import AuthError, Challenge, InvalidRequest, ServiceUnavailable
from .flow import BUSY, NO_FLIGHT, EffectFailed, Flow, LeaderGone
from .http import HTTP, require_secure_url
from .identity import Identity, build_identity
from .jose import (
    ALGORITHMS,
    ASYMMETRIC,
    HMAC_MIN_BYTES,
    TokenError,
    VerifyKey,
    json_segment,
    load_static_key,
    signature_segment,
)
from .jose import peek_payload as _peek
from .jwks import JWKSError, KeySet

log = logging.getLogger("asgi_auth")

ScopeSource = str | Callable[[Mapping[str, Any]], Iterable[str]]
# An int, not b".": `b"." in data` first tries the operand as an integer, and raising and
# clearing that TypeError costs more than the search.
_DOT = ord(".")
_NO_SCOPES: frozenset[str] = frozenset()


def _claim_path(claims: Mapping[str, Any], path: str) -> Any:
    if "." not in path:
        return claims.get(path)
    value: Any = claims
    for part in path.split("."):
        if type(value) is not dict:
            return None
        value = value.get(part)
    return value


def _log_context(token: str) -> dict[str, object]:
    """Non-secret facts about a failed token, for the log line: `kid`, `iss`, `sub`."""
    parts = token.split(".")
    ctx: dict[str, object] = {}
    if len(parts) == 3:
        for segment, names in ((parts[0], ("kid", "alg")), (parts[1], ("iss", "sub"))):
            try:
                data = json_segment(segment, "")
            except TokenError:
                continue
            for name in names:
                value = data.get(name)
                if type(value) is str:
                    ctx[name] = value[:100]
    return ctx


class JWTAuth:
    """Verifies JWT access tokens from one issuer.

    ```python
    JWTAuth("https://idp.example", "api", algorithms=["RS256"])      # keys via discovery
    JWTAuth("https://idp.example", "api", algorithms=["ES256"], jwks_uri="https://idp.example/jwks")
    JWTAuth("svc", "api", algorithms=["HS256"], keys=secret_bytes)  # static HMAC secret
    ```

    - Keys come from `keys=` (PEM, JWK, JWKS dict, `cryptography` key, or bytes for HS*),
      or from `jwks_uri`, else from OpenID / RFC 8414 discovery on `issuer`.
    - `algorithms` is the allow-list; a key's type must fit the algorithm; `jku`, `x5u`,
      `jwk` and `x5c` headers never choose a key; `kid` is only a lookup key; `crit` is
      rejected.
    - `exp` is required; `iss`, `aud`, `nbf` and `iat` are checked with `leeway`; `typ`
      is enforced when given (e.g. `"at+jwt"`, RFC 9068 §4).
    - Scopes come from `scope_claims`: claim names or dotted paths
      (`"realm_access.roles"`), or a callable over the claims.
    - A verified token is remembered until the earliest of its `exp`, `cache_ttl`, or its
      key leaving the key set; any other token, even one byte different, is verified.
    - Several `JWTAuth` in one middleware are chosen by the token's `iss`.
    """

    method = "jwt"
    #: Tokens are parsed strictly (base64url and dots only), so the middleware may skip
    #: its own visible-ASCII scan of the credential: see `_failed`.
    strict_syntax = True
    header: str | None = None
    query_param: str | None = None

    def __init__(
        self,
        issuer: str,
        audience: str | Sequence[str],
        *,
        algorithms: Iterable[str],
        jwks_uri: str | None = None,
        keys: Any = None,
        leeway: float = 30.0,
        required_claims: Iterable[str] = (),
        typ: str | None = None,
        scope_claims: Sequence[ScopeSource] = ("scope", "scp"),
        subject_claim: str = "sub",
        dpop: Literal["allowed", "required", "off"] = "allowed",
        dpop_verifier: DPoPVerifier | None = None,
        cache_ttl: float = 300.0,
        max_cache_entries: int = 10_000,
        jwks_min_ttl: float = 60.0,
        jwks_max_ttl: float = 86400.0,
        unknown_kid_interval: float = 30.0,
        max_stale: float = 86400.0,
        missing_key_grace: float = 900.0,
        timeout: float = 5.0,
        http: HTTP | None = None,
        realm: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not issuer:
            raise ValueError("issuer is required")
        audiences = [audience] if isinstance(audience, str) else list(audience)
        if not audiences or not all(isinstance(a, str) and a for a in audiences):
            raise ValueError("audience must be a non-empty string or list of strings")
        algs = frozenset(algorithms)
        if isinstance(algorithms, str):
            raise TypeError("algorithms takes a list, e.g. ['RS256']")
        if not algs:
            raise ValueError("algorithms must list at least one algorithm")
        unknown = algs - ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithms: {sorted(unknown)} (never 'none')")

        if not 0 <= leeway <= 300:  # written so that NaN fails too
            raise ValueError("leeway must be between 0 and 300 seconds")
        require_durations(
            "JWTAuth",
            cache_ttl=cache_ttl,
            jwks_min_ttl=jwks_min_ttl,
            jwks_max_ttl=jwks_max_ttl,
            unknown_kid_interval=unknown_kid_interval,
            max_stale=max_stale,
            missing_key_grace=missing_key_grace,
        )
        require_timeouts("JWTAuth", timeout=timeout)
        if jwks_min_ttl > jwks_max_ttl:
            raise ValueError("jwks_min_ttl must not exceed jwks_max_ttl")
        for name, value in (("required_claims", required_claims), ("scope_claims", scope_claims)):
            if isinstance(value, str):
                raise TypeError(f"{name} takes a list, e.g. [{value!r}]")
        self.issuer = issuer
        #: The gate routes tokens whose unverified `iss` is this one here (see `accepts`).
        self.issuer_route = issuer
        self.audiences = frozenset(audiences)
        self.algorithms = algs
        self.leeway = leeway
        self.required_claims = tuple(required_claims)
        self.typ = typ.lower().removeprefix("application/") if typ else None
        self.scope_claims = tuple(scope_claims)
        self.subject_claim = subject_claim
        # Fast paths for the common shapes: plain claim names, no dotted paths.
        names = tuple(s for s in self.scope_claims if isinstance(s, str) and "." not in s)
        self._scope_names = names if len(names) == len(self.scope_claims) else None
        self._subject_path = "." in subject_claim
        self.dpop = dpop
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self._clock = clock
        self._http = http or HTTP(timeout=timeout)
        # How long a fetch may be in flight: a join waits `timeout`, the fetch itself its
        # HTTP's time-out. The settle hook unmarks it sooner; this is the safety net.
        self._fetch_window = 2 * max(timeout, self._http.timeout)
        params = (("realm", realm),) if realm else ()
        self.challenge = Challenge("Bearer", params)
        self.dpop_verifier, self.schemes, self.challenges = dpop_setup(
            dpop, dpop_verifier, self.challenge, clock
        )
        self._hits = HitCache(max_cache_entries, clock)
        #: The hot path: the Identity of a token verified earlier and still valid, or None.
        self.cached: Callable[[str], Identity | None] = self._hits.get
        self._headers: dict[bytes, tuple[str, str | None]] = {}

        if keys is not None:
            if jwks_uri is not None:
                raise ValueError("give keys= or jwks_uri=, not both")
            static = load_static_key(keys)
            if not static:
                raise ValueError("keys= holds no usable key")
            for alg in algs:
                if not any(k.fits(alg) for k in static):
                    hint = (
                        f" (an {alg} secret needs {HMAC_MIN_BYTES[alg[2:]]} bytes or more)"
                        if alg[:2] == "HS"
                        else ""
                    )
                    raise ValueError(f"no configured key fits {alg}{hint}")
            self._keys = KeySet.of(static, clock)
        else:
            hs = algs - ASYMMETRIC
            if hs:
                raise ValueError(f"{sorted(hs)} need a static secret (keys=), never a URL")
            self._keys = KeySet(
                clock=clock,
                min_ttl=jwks_min_ttl,
                max_ttl=jwks_max_ttl,
                unknown_kid_interval=unknown_kid_interval,
                max_stale=max_stale,
                missing_grace=missing_key_grace,
            )
        self._jwks_uri = require_secure_url(jwks_uri, "jwks_uri") if jwks_uri else None
        self._metadata = (
            Metadata(issuer, self._http, timeout, clock)
            if keys is None and jwks_uri is None
            else None
        )

    def __repr__(self) -> str:
        return f"JWTAuth(issuer={self.issuer!r}, algorithms={sorted(self.algorithms)})"

    # -- the middleware's view -------------------------------------------------------------

    def accepts(self, token: str) -> bool:
        if token in self._hits:
            return True
        payload = _peek(token)
        return payload is not None and payload.get("iss") == self.issuer

    def quick(self, token: str) -> Identity | None:
        """The full check of a token not yet cached, when it needs no I/O (the key set is
        settled and knows the key); None when it does, and `flow` must run. Raises
        `AuthError` for a token that fails."""
        try:
            message, alg, kid, payload, signature = self._parse(token)
            now = self._clock()
            keyset = self._keys
            # Settled keys (no refresh due, nothing to expire): a memoised lookup.
            if now >= keyset.settled_until:
                return None
            keys = keyset.find(kid, alg)
            if not keys:
                return None
            return self._finish(token, message, alg, payload, signature, keys, now)
        except AuthError as err:
            error = self._failed(err, token)
        raise error  # outside the handler: no exception chain leads back to the token

    def flow(self, token: str, request: RequestInfo) -> Flow[Identity]:
        try:
            message, alg, kid, payload, signature = self._parse(token)
            now = self._clock()
            keyset = self._keys
            keys = keyset.find(kid, alg) if now < keyset.settled_until else None
            if not keys:
                keys = yield from self._keys_for(kid, alg, now)
                now = self._clock()
            return self._finish(token, message, alg, payload, signature, keys, now)
        except AuthError as err:
            error = self._failed(err, token)
        raise error

    def _parse(self, token: str) -> tuple[bytes, str, str | None, dict[str, Any], bytes]:
        """`(signing input, alg, kid, payload, signature)` of a compact JWS, parsed
        strictly: a token that parses holds only base64url characters and two dots."""
        # Not `str.encode` in a try: its UnicodeEncodeError holds the whole token, and
        # would stay reachable as the context of the error raised here.
        if not token.isascii():
            raise TokenError("malformed token", reason="malformed_token")
        raw = token.encode("ascii")
        # Bytes from here: segments feed a2b_base64 and the signature check without a
        # per-segment encode, and the signing input is one slice.
        message, _, s = raw.rpartition(b".")
        h, dot, p = message.partition(b".")
        if not dot or _DOT in p:
            raise TokenError("not a signed JWT", reason="malformed_token")  # a JWE has 5
        known = self._headers.get(h)  # tokens of one issuer share a handful of headers
        alg, kid = known if known is not None else self._header(h)
        payload = json_segment(p, "payload")
        if payload.get("iss") != self.issuer:
            raise TokenError("invalid issuer", reason="bad_issuer")
        return message, alg, kid, payload, signature_segment(s)

    def _finish(
        self,
        token: str,
        message: bytes,
        alg: str,
        payload: dict[str, Any],
        signature: bytes,
        keys: list[VerifyKey],
        now: float,
    ) -> Identity:
        for key in keys:
            if key.verify(alg, message, signature):
                break
        else:
            raise TokenError("invalid signature", reason="bad_signature")
        identity = self._identity(payload, now)
        exp = identity.expires_at or now
        ttl_end = now + self.cache_ttl
        self._hits.put(token, identity, exp if exp < ttl_end else ttl_end, key)
        return identity

    @staticmethod
    def _failed(err: AuthError, token: str) -> AuthError:
        # The middleware skips its visible-ASCII check of an Authorization credential for
        # this strict parser (see `strict_syntax`), so a refused token that is not visible
        # ASCII is told apart here, on the failure path only: it stays 400 invalid_request.
        if not visible_ascii(token):
            return InvalidRequest(
                f"{AUTHORIZATION_LABEL} is not a valid credential", reason="malformed_header"
            )
        if not err.context:
            err.context = _log_context(token)
        return err

    def _keys_for(self, kid: str | None, alg: str, now: float) -> Flow[list[VerifyKey]]:
        """The keys that may verify `kid`/`alg`, refreshing the key set first when it is
        due, or once per interval when `kid` is unknown."""
        keyset = self._keys
        generation = keyset.generation
        due = keyset.due(now)
        known = keyset.knows(kid)
        join_only = False
        if not due and not known:
            if keyset.may_refetch_for_unknown_kid(now):
                keyset.last_unknown_refetch = now
                due = True
            elif keyset.fetching(now, self._fetch_window):
                # The fetch in flight (say, started by a rotation's first token) may bring
                # this kid: wait for it, as the first token does, rather than refuse it.
                # Only wait: it starts no fetch, unless the one in flight is another
                # driver's, which it cannot join (see `_refresh`).
                due = join_only = True
        if due:
            # Only a request that cannot go on without the answer waits for it; the others
            # keep verifying with the keys held (stale ones up to max_stale) meanwhile.
            wait = not known or not keyset.usable(now)
            yield from self._refresh(now, generation, wait=wait, start=not join_only)
            now = self._clock()
        if not keyset.usable(now):
            raise ServiceUnavailable("signing keys unavailable", reason="jwks_unavailable")
        keyset.expire_missing(now)
        keys = keyset.find(kid, alg)
        if not keys:
            if keyset.failing or (join_only and keyset.generation == generation):
                # The issuer failed us since its last good answer, or the fetch this token
                # waited for never answered (its thread was stopped): the key may well be
                # a new one we could not fetch. A 401 would make clients drop a good token.
                raise ServiceUnavailable("signing keys unavailable", reason="jwks_unavailable")
            raise TokenError("unknown signing key", reason="unknown_kid")
        return keys

    def _header(self, segment: bytes) -> tuple[str, str | None]:
        """`(alg, kid)` of a JOSE header, validated. Tokens of one issuer share a handful
        of headers, so results are memoised (bounded) by the segment's exact bytes; `_parse`
        looks there first."""
        header = json_segment(segment, "header")
        alg = header.get("alg")
        kid = header.get("kid")
        if type(alg) is not str or alg not in self.algorithms:
            raise TokenError("token algorithm not allowed", reason="alg_not_allowed")
        if "crit" in header:
            # RFC 7515 §4.1.11: we understand no extensions, so a critical one is fatal.
            raise TokenError("unsupported critical header", reason="crit")
        if self.typ is not None:
            typ = header.get("typ")
            if type(typ) is not str or typ.lower().removeprefix("application/") != self.typ:
                raise TokenError("wrong token type", reason="bad_typ")
        if kid is not None and (type(kid) is not str or not kid or len(kid) > 256):
            raise TokenError("malformed kid", reason="malformed_token")
        if len(self._headers) >= 64:
            self._headers.clear()
        self._headers[segment] = result = (alg, kid)
        return result

    # -- claims ----------------------------------------------------------------------------

    def _identity(self, p: dict[str, Any], now: float) -> Identity:
        # Written flat, with exact type tests: this runs for every first-seen token.
        # No NaN or infinity gets past the JSON decoder (strict_json); a huge int does:
        # `exp` has a range check, and a huge `nbf`/`iat` fails or means "long ago".
        leeway = self.leeway
        exp = p.get("exp")
        if exp is None:
            raise TokenError("token has no exp", reason="missing_exp")
        if (type(exp) is not int and type(exp) is not float) or not 0 <= exp < 1e12:
            raise TokenError("malformed exp", reason="malformed_claim")
        if now > exp + leeway:
            raise TokenError("token expired", reason="expired")
        nbf = p.get("nbf")
        if nbf is not None and (
            (type(nbf) is not int and type(nbf) is not float) or now + leeway < nbf
        ):
            raise TokenError("token not yet valid", reason="not_yet_valid")
        iat = p.get("iat")
        if iat is not None and (
            (type(iat) is not int and type(iat) is not float) or iat > now + leeway
        ):
            raise TokenError("token issued in the future", reason="bad_iat")
        aud = p.get("aud")
        audiences = self.audiences
        if type(aud) is str:
            aud_ok = aud in audiences
        elif type(aud) is list:
            aud_ok = any(type(a) is str and a in audiences for a in aud)
        else:
            aud_ok = False
        if not aud_ok:
            raise TokenError("invalid audience", reason="bad_audience")
        for claim in self.required_claims:
            if claim not in p:
                raise TokenError(f"token has no {claim}", reason="missing_claim")
        client_id = p.get("client_id") or p.get("azp")
        if type(client_id) is not str:
            client_id = None
        subject = (
            _claim_path(p, self.subject_claim) if self._subject_path else p.get(self.subject_claim)
        )
        if type(subject) is not str or not subject:
            subject = client_id
            if not subject:
                raise TokenError("token has no subject", reason="missing_sub")
        cnf = p.get("cnf")
        jkt = cnf.get("jkt") if type(cnf) is dict else None
        return build_identity(
            subject,
            self._scopes(p),
            "jwt",
            MappingProxyType(p),
            float(exp),
            None,
            client_id,
            self.issuer,
            jkt if type(jkt) is str else None,
        )

    def _scopes(self, claims: dict[str, Any]) -> frozenset[str]:
        names = self._scope_names
        if names is not None:
            # Plain claim names, and usually one of them present as a string ("scope").
            found = None
            for name in names:
                value = claims.get(name)
                if value is not None:
                    if found is not None:
                        break
                    found = value
            else:
                if found is None:
                    return _NO_SCOPES
                if type(found) is str:
                    return frozenset(found.split())
        scopes: set[str] = set()
        for source in self.scope_claims:
            if type(source) is str:
                value = claims.get(source) if "." not in source else _claim_path(claims, source)
            else:
                value = source(claims)  # type: ignore[operator]
            if value is None:
                continue
            if type(value) is str:
                scopes.update(value.split())
            elif isinstance(value, (list, tuple, set, frozenset)):
                scopes.update(v for v in value if type(v) is str)
        return frozenset(scopes)

    # -- keys ------------------------------------------------------------------------------

    def _settled(self, mark: float | None, result: Any, error: BaseException | None) -> None:
        """A JWKS fetch's outcome, from the driver that performed it, once: merged or
        noted as failed (and logged, once) even when no request is left to take it in
        (its client went away), and the fetch no longer marked in flight."""
        keyset = self._keys
        now = self._clock()
        problem: object = None
        if error is None:
            try:
                keyset.update(result, now)
            except Exception as exc:  # JWKSError: an answer that cannot replace our keys
                problem = exc
        elif not isinstance(error, LeaderGone):  # abandoned is not failed
            problem = type(error).__name__
        if problem is not None:
            keyset.failed(now)
            log.warning(
                "JWKS refresh failed: iss=%s error=%s stale_keys=%s",
                self.issuer,
                problem,
                keyset.usable(now),
            )
        keyset.unmark(mark)

    def _refresh(self, now: float, generation: int, *, wait: bool, start: bool) -> Flow[None]:
        """Fetch the JWKS (discovering its URL first if needed) and merge it. Failures are
        logged and remembered; the current keys stay in use (stale-if-error)."""
        keyset = self._keys
        uri = self._jwks_uri
        if uri is None:
            assert self._metadata is not None  # no static keys: discovery is set up
            try:
                uri = yield from self._metadata.endpoint("jwks_uri")
            except (EffectFailed, ServiceUnavailable) as exc:
                if keyset.failed_first(self._clock()):  # once, not per waiter
                    log.warning(
                        "OpenID discovery failed: iss=%s error=%s stale_keys=%s",
                        self.issuer,
                        exc.reason,
                        keyset.usable(now),
                    )
                return
        if keyset.generation != generation:
            return  # another request refreshed the keys while this one waited
        mark = None
        if start and not keyset.fetching(now, self._fetch_window):
            mark = keyset.mark(self._clock())
        result: Any = None
        try:
            result = yield get(
                self._http,
                uri,
                self.timeout,
                join=wait,
                start=start,
                settle=partial(self._settled, mark),
            )
            if result is NO_FLIGHT and keyset.generation == generation and not keyset.failing:
                # The fetch marked in flight is one this driver cannot join (another event
                # loop's or middleware's): fetch here, once, marked as ours so that later
                # tokens here join it rather than each fetching.
                mark = keyset.mark(self._clock())
                result = yield get(
                    self._http, uri, self.timeout, settle=partial(self._settled, mark)
                )
        except EffectFailed:
            keyset.failed(self._clock())  # the fetch's own failure was logged by `_settled`
            result = None
        # Unmarked once answered or failed; not when this request is cancelled (the close
        # of this generator): the fetch runs on for the others waiting on it (see
        # `AsyncDriver`), and `_settled` unmarks it then.
        keyset.unmark(mark)
        if result is None or result is BUSY or result is NO_FLIGHT:
            return  # failed, or another request is fetching, or nothing was: keys held
        try:
            keyset.update(result, self._clock())  # as a rule `_settled` merged it already
        except JWKSError:
            keyset.failed(self._clock())  # driven without a driver (no settle hook)


__all__ = ["JWTAuth", "VerifyKey"]

"""Opaque access tokens, checked by the authorization server (RFC 7662 introspection)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, Literal, Protocol
from urllib.parse import quote

from cachetools import TLRUCache

from . import strict_json
from .authenticator import RequestInfo, require_durations, require_timeouts
from .cache import HitCache
from .discovery import Metadata
from .dpop import DPoPVerifier, dpop_setup
from .errors import AuthError, Challenge, InvalidToken, ServiceUnavailable
from .flow import Effect, EffectFailed, Flow
from .http import HTTP, require_secure_url
from .identity import Identity

log = logging.getLogger("asgi_auth")

AuthMethod = Literal["client_secret_basic", "client_secret_post"]


class SharedCache(Protocol):
    """Where workers share introspection answers (`RedisIntrospectionCache`, extra
    "redis"). `material` holds the token: an implementation stores only a keyed hash of
    it. `get`/`put` serve the sync driver, `aget`/`aput` the async one."""

    timeout: float

    def available(self) -> bool: ...
    def failed(self, error: BaseException) -> None: ...
    def succeeded(self) -> None: ...
    def get(self, material: bytes) -> bytes | None: ...
    async def aget(self, material: bytes) -> bytes | None: ...
    def put(self, material: bytes, value: bytes, ttl_ms: int) -> None: ...
    async def aput(self, material: bytes, value: bytes, ttl_ms: int) -> None: ...


def _shared_answer(raw: object) -> tuple[dict[str, Any] | None, float] | None:
    """A stored `{"answer": {...} | null, "until": deadline}`: (answer or None for an
    inactive token, deadline); None for anything else (then the endpoint is asked)."""
    if not isinstance(raw, bytes):
        return None
    try:
        value = strict_json.loads(raw)
    except ValueError:
        return None
    if type(value) is not dict or type(value.get("until")) not in (int, float):
        return None
    answer = value.get("answer")
    if answer is None:
        return None, float(value["until"])
    if type(answer) is dict and answer.get("active") is True:
        return answer, float(value["until"])
    return None


def _unavailable(reason: str, ctx: Mapping[str, object]) -> ServiceUnavailable:
    return ServiceUnavailable("token introspection unavailable", reason=reason, context=ctx)


class IntrospectionAuth:
    """Checks access tokens by asking the authorization server (RFC 7662).

    ```python
    IntrospectionAuth(issuer="https://idp.example", client_id="api", client_secret=secret)
    IntrospectionAuth(endpoint="https://idp.example/introspect", client_id="api",
                      client_secret=secret, auth_method="client_secret_post", audience="api")
    ```

    - The endpoint comes from `endpoint`, else from the issuer's metadata
      (`introspection_endpoint`). Tokens only ever travel over HTTPS (or to loopback).
    - The answer must say `"active": true` (the JSON boolean); `exp`, `nbf`, `iss`, `aud`
      and `token_type` are checked when present; scopes come from `scope`, the subject
      from `sub`, else `client_id`.
    - Active answers are cached until `min(exp, now + cache_ttl)`, inactive ones for
      `negative_ttl`; both bounded. One request per token however many wait for it.
    - The endpoint down, slow or answering garbage: 503 with `Retry-After`.
    - `shared_cache=RedisIntrospectionCache(url)` shares answers between workers: on a
      local miss Redis is asked before the endpoint, and answers go back there with the
      time they have left. Redis down or slow: the endpoint is asked, as without it.
    - Next to `JWTAuth`s in one middleware it takes the tokens none of them claims.
    """

    method = "introspection"
    header: str | None = None
    query_param: str | None = None
    fallback = True  # among bearer authenticators, the one for tokens no JWTAuth claims

    def __init__(
        self,
        *,
        issuer: str | None = None,
        endpoint: str | None = None,
        client_id: str,
        client_secret: str,
        auth_method: AuthMethod = "client_secret_basic",
        cache_ttl: float = 300.0,
        negative_ttl: float = 10.0,
        max_cache_entries: int = 10_000,
        audience: str | Iterable[str] | None = None,
        dpop: Literal["allowed", "required", "off"] = "allowed",
        dpop_verifier: DPoPVerifier | None = None,
        timeout: float = 5.0,
        http: HTTP | None = None,
        realm: str | None = None,
        clock: Callable[[], float] = time.time,
        shared_cache: SharedCache | None = None,
    ) -> None:
        if endpoint is None and issuer is None:
            raise ValueError("IntrospectionAuth needs endpoint= or issuer= (for discovery)")
        if auth_method not in ("client_secret_basic", "client_secret_post"):
            raise ValueError(f"unsupported auth_method {auth_method!r}")
        if not client_id or not client_secret:
            raise ValueError("client_id and client_secret are required")
        require_durations("IntrospectionAuth", cache_ttl=cache_ttl, negative_ttl=negative_ttl)
        require_timeouts("IntrospectionAuth", timeout=timeout)
        self.issuer = issuer
        self.client_id = client_id
        self._client_secret = client_secret
        self.auth_method = auth_method
        self.cache_ttl = cache_ttl
        self.negative_ttl = negative_ttl
        self.audiences = (
            None
            if audience is None
            else frozenset([audience] if isinstance(audience, str) else audience)
        )
        self.dpop = dpop
        self.timeout = timeout
        self._clock = clock
        self._http = http or HTTP(timeout=timeout)
        self._endpoint = require_secure_url(endpoint, "endpoint") if endpoint else None
        self._metadata = (
            Metadata(issuer, self._http, timeout, clock) if endpoint is None and issuer else None
        )
        self.challenge = Challenge("Bearer", (("realm", realm),) if realm else ())
        self.dpop_verifier, self.schemes, self.challenges = dpop_setup(
            dpop, dpop_verifier, self.challenge, clock
        )
        self._hits = HitCache(max_cache_entries, clock)
        #: The hot path: the Identity of a token found active and still valid, or None.
        self.cached: Callable[[str], Identity | None] = self._hits.get
        # digest -> until when it is known inactive (an answer from Redis has less left)
        self._inactive: TLRUCache[str, float] = TLRUCache(
            maxsize=max_cache_entries, ttu=lambda _k, until, _now: until, timer=clock
        )
        self.shared_cache = shared_cache
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self._endpoint or self.issuer
        shared = "" if self.shared_cache is None else f", shared_cache={self.shared_cache!r}"
        return f"IntrospectionAuth({where!r}, client_id={self.client_id!r}{shared})"

    def accepts(self, token: str) -> bool:
        return True

    def _request(self, token: str) -> dict[str, Any]:
        data = {"token": token, "token_type_hint": "access_token"}
        headers = {"Accept": "application/json"}
        if self.auth_method == "client_secret_basic":
            # RFC 6749 §2.3.1: both parts form-urlencoded before base64.
            pair = f"{quote(self.client_id, safe='')}:{quote(self._client_secret, safe='')}"
            headers["Authorization"] = "Basic " + b64encode(pair.encode()).decode()
        else:
            data |= {"client_id": self.client_id, "client_secret": self._client_secret}
        return {"headers": headers, "data": data}

    def flow(self, token: str, request: RequestInfo) -> Flow[Identity]:
        digest = hashlib.sha256(token.encode()).hexdigest()
        ctx: dict[str, object] = {"token_sha256": digest[:12]}
        with self._lock:
            inactive = digest in self._inactive
        if inactive:
            raise InvalidToken("token is not active", reason="inactive", context=ctx)
        endpoint = self._endpoint
        if endpoint is None:
            assert self._metadata is not None
            endpoint = yield from self._metadata.endpoint("introspection_endpoint")
        shared = self.shared_cache
        # What the shared cache keys its HMAC on: answers differ by server and client.
        material = b""
        if shared is not None:
            material = b"\0".join(x.encode() for x in (endpoint, self.client_id, token))
        if shared is not None and shared.available():
            found = yield from self._shared_get(shared, material, endpoint, digest)
            now = self._clock()
            if found is not None and found[1] > now:  # `until` passed: the endpoint decides
                answer, until = found
                if answer is None:
                    with self._lock:
                        self._inactive[digest] = min(until, now + self.negative_ttl)
                    raise InvalidToken("token is not active", reason="inactive", context=ctx)
                try:
                    identity = self._identity(answer, now, ctx)
                except AuthError:
                    identity = None  # a stored answer that fails the checks: ask the endpoint
                if identity is not None:
                    self._hits.put(token, identity, min(until, self._deadline(identity, now)))
                    return identity
        req = self._request(token)
        try:
            result = yield Effect(
                key=("introspect", endpoint, digest),
                sync=partial(self._http.request, "POST", endpoint, **req),
                async_=partial(self._http.arequest, "POST", endpoint, **req),
                timeout=self.timeout,
            )
        except EffectFailed as exc:
            raise _unavailable("introspection_failed", {**ctx, **exc.context}) from None
        if result.status != 200:
            raise _unavailable("introspection_status", {**ctx, "status": result.status})
        try:
            answer = strict_json.loads(result.content)
        except ValueError:  # also NaN and infinities: `nbf: NaN` compared false with now
            answer = None
        if type(answer) is not dict or type(answer.get("active")) is not bool:
            # RFC 7662 §2.2: `active` is a JSON boolean. Anything else is a broken server,
            # and a broken server must never let a token through.
            raise _unavailable("introspection_invalid", ctx)
        now = self._clock()
        if answer["active"] is not True:
            until = now + self.negative_ttl
            with self._lock:
                self._inactive[digest] = until
            if shared is not None:
                yield from self._shared_put(shared, material, endpoint, digest, None, until, now)
            raise InvalidToken("token is not active", reason="inactive", context=ctx)
        identity = self._identity(answer, now, ctx)
        deadline = self._deadline(identity, now)
        self._hits.put(token, identity, deadline)
        if shared is not None:
            # The answer (the Identity's claims), without any value equal to the token.
            kept = {k: v for k, v in answer.items() if v != token}
            yield from self._shared_put(shared, material, endpoint, digest, kept, deadline, now)
        return identity

    def _deadline(self, identity: Identity, now: float) -> float:
        deadline = now + self.cache_ttl
        if identity.expires_at is not None:
            deadline = min(deadline, identity.expires_at)
        return deadline

    def _shared_get(
        self, shared: SharedCache, material: bytes, endpoint: str, digest: str
    ) -> Flow[tuple[dict[str, Any] | None, float] | None]:
        """The answer other workers stored, through the driver (one GET per token however
        many wait); None on a miss, on garbage and when Redis fails (logged once)."""
        try:
            raw = yield Effect(
                key=("introspect-shared", endpoint, digest),
                sync=partial(shared.get, material),
                async_=partial(shared.aget, material),
                timeout=shared.timeout,
            )
        except EffectFailed as exc:
            shared.failed(exc.cause)
            return None
        shared.succeeded()
        return _shared_answer(raw)

    def _shared_put(
        self,
        shared: SharedCache,
        material: bytes,
        endpoint: str,
        digest: str,
        answer: dict[str, Any] | None,
        until: float,
        now: float,
    ) -> Flow[None]:
        """Store an answer for the time it has left (`PX`); best effort: failures are
        logged once and the request goes on."""
        ttl_ms = math.floor((until - now) * 1000)
        if ttl_ms < 1 or not shared.available():
            return
        value = json.dumps({"answer": answer, "until": until}, separators=(",", ":")).encode()
        try:
            # join=False: requests that waited on one introspection write it back once.
            yield Effect(
                key=("introspect-shared-put", endpoint, digest),
                sync=partial(shared.put, material, value, ttl_ms),
                async_=partial(shared.aput, material, value, ttl_ms),
                timeout=shared.timeout,
                join=False,
            )
        except EffectFailed as exc:
            shared.failed(exc.cause)
        else:
            shared.succeeded()

    def _identity(self, a: dict[str, Any], now: float, ctx: dict[str, object]) -> Identity:
        def bad(description: str, reason: str) -> InvalidToken:
            return InvalidToken(description, reason=reason, context=ctx)

        exp = a.get("exp")
        if exp is not None:
            if type(exp) not in (int, float) or not 0 <= exp < 1e12:
                raise _unavailable("introspection_invalid", ctx)
            if exp <= now:
                raise bad("token expired", "expired")
        nbf = a.get("nbf")
        if nbf is not None and (type(nbf) not in (int, float) or nbf > now):
            raise bad("token not yet valid", "not_yet_valid")
        iss = a.get("iss")
        if iss is not None and self.issuer is not None and iss != self.issuer:
            raise bad("invalid issuer", "bad_issuer")
        aud = a.get("aud")
        if self.audiences is not None:
            auds = [aud] if type(aud) is str else aud if type(aud) is list else []
            if not any(type(x) is str and x in self.audiences for x in auds):
                raise bad("invalid audience", "bad_audience")
        token_type = a.get("token_type")
        if token_type is not None and str(token_type).lower() not in (
            "bearer",
            "dpop",
            "access_token",
        ):
            raise bad("not an access token", "bad_token_type")
        scope = a.get("scope")
        scopes = frozenset(scope.split()) if type(scope) is str else frozenset()
        client_id = a.get("client_id") if type(a.get("client_id")) is str else None
        sub = a.get("sub")
        subject = sub if type(sub) is str and sub else client_id
        if not subject:
            raise bad("token has no subject", "missing_sub")
        cnf = a.get("cnf")
        jkt = cnf.get("jkt") if type(cnf) is dict else None
        ctx["sub"] = subject
        return Identity(
            subject=subject,
            scopes=scopes,
            method=self.method,
            claims=MappingProxyType(a),
            expires_at=float(exp) if exp is not None else None,
            client_id=client_id,
            issuer=iss if type(iss) is str else self.issuer,
            dpop_jkt=jkt if type(jkt) is str else None,
        )

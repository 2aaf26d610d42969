"""Opaque access tokens, checked by the authorization server (RFC 7662 introspection)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from base64 import b64encode
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote

from cachetools import TLRUCache

from . import strict_json
from .authenticator import RequestInfo, require_durations, require_timeouts
from .cache import HitCache
from .discovery import Metadata
from .dpop import DPoPVerifier, dpop_setup
from .errors import Challenge, InvalidToken, ServiceUnavailable
from .flow import Effect, EffectFailed, Flow
from .http import HTTP, require_secure_url
from .identity import Identity

log = logging.getLogger("asgi_auth")

AuthMethod = Literal["client_secret_basic", "client_secret_post"]


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
        self._inactive: TLRUCache[str, bool] = TLRUCache(
            maxsize=max_cache_entries, ttu=lambda _k, _v, now: now + negative_ttl, timer=clock
        )
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = self._endpoint or self.issuer
        return f"IntrospectionAuth({where!r}, client_id={self.client_id!r})"

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
            with self._lock:
                self._inactive[digest] = True
            raise InvalidToken("token is not active", reason="inactive", context=ctx)
        identity = self._identity(answer, now, ctx)
        deadline = now + self.cache_ttl
        if identity.expires_at is not None:
            deadline = min(deadline, identity.expires_at)
        self._hits.put(token, identity, deadline)
        return identity

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

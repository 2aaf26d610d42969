"""The framework-free decision logic that both middlewares share.

A middleware gathers the request's method, path and the few headers the configured
authenticators read; the gate turns them into a decision, a credential and, on failure,
an `ErrorResponse`. Everything request-independent is computed here, once.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TypedDict
from urllib.parse import parse_qsl

from .authenticator import AUTHORIZATION_LABEL, Authenticator, RequestInfo, visible_ascii
from .dpop import DPoPError, DPoPVerifier
from .errors import (
    AuthError,
    Challenge,
    ErrorResponse,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingCredentials,
)
from .identity import Identity
from .jose import peek_payload
from .resource import ProtectedResource
from .routing import RoutePath
from .rules import Access, Decision, Rule, Rules
from .throttle import Throttle, client_address

ErrorHook = Callable[[AuthError, RequestInfo], "ErrorResponse | None"]

# Parameter names that carry credentials in URLs; refused unless an authenticator opts in
# (RFC 6750 §2.3 and §5.3: URLs are logged and cached).
_KNOWN_MAX = 4096
_QUERY_CREDENTIAL_NAMES = frozenset({"access_token", "api_key", "apikey", "api-key"})


#: `(authenticator, credential, label, scheme, raw header value)`.
Credential = tuple[Authenticator, str, str, str, str | None]


class GateOptions(TypedDict, total=False):
    """Options shared by `asgi_auth.AuthMiddleware` and `wsgi_auth.AuthMiddleware`.

    - `optional_paths`: prefixes where a credential is checked if sent, and anonymous
      requests pass with an unauthenticated user.
    - `rules`: `Rule` objects: scopes per path prefix and method, or access overrides.
    - `required_scopes`: scopes every protected request needs.
    - `default`: access for paths no rule covers (`"protected"`).
    - `case_sensitive_paths`: match rules case-sensitively (default True).
    - `route_path`: which path the rules judge (see `asgi_auth.routing`): `"auto"`
      (default: the path the app's router dispatches on, below `root_path` for most,
      the whole path for Falcon, below `FORCE_SCRIPT_NAME` for Django 5), `"root_path"`
      (below `root_path`; WSGI: `PATH_INFO`) or `"full"` (the whole path; WSGI:
      `SCRIPT_NAME` + `PATH_INFO`).
    - `realm`: the realm in `WWW-Authenticate` challenges.
    - `allow_cors_preflight`: let a CORS preflight through unauthenticated, so CORS works
      when `CORSMiddleware` sits inside (default True). Only an exact `OPTIONS` (as the
      server gave it) with `Origin` and `Access-Control-Request-Method`, no credential
      and no body; and only a CORS layer's answer leaves (status and `Access-Control-*`/
      `Vary` headers, no body), else the 401 of a request without credentials. With no
      CORS layer inside, the request still reaches the app as an unauthenticated
      `OPTIONS`, which a handler that ignores the method runs: then set False, or put
      CORS outside this middleware (recommended: its 401s then carry CORS headers).
    - `require_https`: refuse credentials sent over plain HTTP.
    - `trusted_proxies`: addresses/networks whose `X-Forwarded-Proto`/`Forwarded` are
      believed (rightmost value) when deciding whether the request came over HTTPS.
    - `on_error`: `(error, request) -> ErrorResponse | None` to customise denials.
    - `max_credential_bytes`: longer credentials are refused with 401 (8192).
    - `resource`: a `ProtectedResource` to publish as RFC 9728 metadata (served at its
      well-known path, named in every 401 challenge).
    - `throttle`: a `Throttle` (extra "throttle"): too many failed credentials per client
      address (through `trusted_proxies`: the rightmost `X-Forwarded-For` entry) or per
      API key id get 429 with `Retry-After`; see `asgi_auth.throttle`.
    """

    optional_paths: Iterable[str]
    rules: Iterable[Rule]
    required_scopes: Iterable[str]
    default: Access
    case_sensitive_paths: bool
    route_path: RoutePath
    realm: str
    allow_cors_preflight: bool
    require_https: bool
    trusted_proxies: Iterable[str]
    on_error: ErrorHook | None
    max_credential_bytes: int
    resource: ProtectedResource | None
    throttle: Throttle | None


class Gate:
    """Compiled configuration: rules, header names, challenges, error rendering."""

    def __init__(
        self,
        authenticators: Sequence[Authenticator],
        *,
        logger: logging.Logger,
        public_paths: Iterable[str] = (),
        optional_paths: Iterable[str] = (),
        rules: Iterable[Rule] = (),
        required_scopes: Iterable[str] = (),
        default: Access = "protected",
        case_sensitive_paths: bool = True,
        route_path: RoutePath = "auto",
        realm: str = "api",
        allow_cors_preflight: bool = True,
        require_https: bool = False,
        trusted_proxies: Iterable[str] = (),
        on_error: ErrorHook | None = None,
        max_credential_bytes: int = 8192,
        resource: ProtectedResource | None = None,
        throttle: Throttle | None = None,
    ) -> None:
        authenticators = list(authenticators)
        if not authenticators:
            raise ValueError("AuthMiddleware needs at least one authenticator")
        for auth in authenticators:
            if not isinstance(auth, Authenticator):
                raise TypeError(f"not an authenticator: {auth!r}")
        if isinstance(public_paths, str) or isinstance(optional_paths, str):
            raise TypeError("public_paths/optional_paths take a list of paths, not a string")
        if max_credential_bytes < 64:
            raise ValueError("max_credential_bytes must be at least 64")
        if route_path not in ("auto", "root_path", "full"):
            raise ValueError(f"route_path must be 'auto', 'root_path' or 'full': {route_path!r}")
        self.route_path = route_path
        self.log = logger
        self.rules = Rules(
            public_paths=public_paths,
            optional_paths=optional_paths,
            rules=rules,
            required_scopes=required_scopes,
            default=default,
            case_sensitive=case_sensitive_paths,
        )
        self.on_error = on_error
        self.max_credential_bytes = max_credential_bytes
        self.allow_cors_preflight = allow_cors_preflight
        self.require_https = require_https
        self.trusted_proxies = tuple(ipaddress.ip_network(p, strict=False) for p in trusted_proxies)

        self.header_auths: list[tuple[str, Authenticator, str]] = []
        self.by_scheme: dict[str, list[Authenticator]] = {}
        self.by_query: dict[str, Authenticator] = {}
        for auth in authenticators:
            if auth.header:
                if any(h == auth.header for h, _, _ in self.header_auths):
                    raise ValueError(f"two authenticators read the {auth.header} header")
                self.header_auths.append((auth.header, auth, auth.header + " header"))
            for scheme in auth.schemes:
                self.by_scheme.setdefault(scheme.lower(), []).append(auth)
            if auth.query_param:
                self.by_query[auth.query_param] = auth
        # Header names (lowercase) a middleware must collect for each request.
        wanted = {"authorization", *(h for h, _, _ in self.header_auths)}
        if allow_cors_preflight:
            wanted.update(("access-control-request-method", "origin"))
        if self.trusted_proxies:
            wanted.update(("x-forwarded-proto", "forwarded"))
        self.throttle = throttle
        if throttle is not None and throttle.per_address and self.trusted_proxies:
            wanted.add("x-forwarded-for")
        self.dpop = any(getattr(a, "dpop_verifier", None) is not None for a in authenticators)
        if self.dpop:
            wanted.update(("dpop", "host"))
        self.wanted = frozenset(wanted)
        # scheme -> {iss: authenticator} for those that own one issuer's tokens (JWTAuth).
        self._issuer_routes: dict[str, dict[str, Authenticator]] = {}
        for scheme, auths in self.by_scheme.items():
            for auth in auths:
                iss = getattr(auth, "issuer_route", None)
                if isinstance(iss, str) and not getattr(auth, "fallback", False):
                    routes = self._issuer_routes.setdefault(scheme, {})
                    if routes.setdefault(iss, auth) is not auth:
                        # Tokens are routed by `iss` alone and never tried twice, so the
                        # second would silently never see a token.
                        raise ValueError(
                            f"two authenticators for issuer {iss!r}: give one JWTAuth "
                            "every audience and algorithm that issuer's tokens use"
                        )
        self.refused_query_names = _QUERY_CREDENTIAL_NAMES - self.by_query.keys()
        self._known: dict[str, Credential] = {}
        #: id(authenticator) -> (its `quick` check or None, whether its syntax is strict).
        self._quick: dict[int, tuple[Callable[[str], Identity | None] | None, bool]] = {
            id(a): (getattr(a, "quick", None), getattr(a, "strict_syntax", False) is True)
            for a in authenticators
        }
        self._query_names = tuple(self.refused_query_names | self.by_query.keys())

        challenges: dict[str, Challenge] = {}
        for auth in authenticators:
            for ch in getattr(auth, "challenges", None) or (auth.challenge,):
                if "realm" not in dict(ch.params):
                    ch = Challenge(ch.scheme, (("realm", realm), *ch.params))
                challenges.setdefault(ch.scheme, ch)
        self.resource = resource
        self.resource_path: str | None = None
        self.resource_response: ErrorResponse | None = None
        if resource is not None:
            verifiers = [getattr(a, "dpop_verifier", None) for a in authenticators]
            body = resource.document(
                issuers=[i for a in authenticators if (i := getattr(a, "issuer", None))],
                scopes=self.rules.all_scopes(),
                dpop_algs=[alg for v in verifiers if v is not None for alg in v.algs_param.split()],
                bearer=any("bearer" in a.schemes for a in authenticators),
            )
            self.resource_path = resource.path
            self.resource_response = ErrorResponse(
                200,
                [("Content-Type", "application/json"), ("Cache-Control", "max-age=300")],
                body,
            )
            # RFC 9728 §5.1: every challenge points clients at the metadata.
            challenges = {
                k: Challenge(c.scheme, (*c.params, ("resource_metadata", resource.url)))
                for k, c in challenges.items()
            }
        self.challenges = tuple(challenges.values())

    # -- per request -------------------------------------------------------------------

    def first(self, auth: Authenticator, value: str, label: str) -> Identity | None:
        """A credential that missed the cache: refuse (400) a value that cannot be one,
        then run the authenticator's `quick` check if it has one. None: run its flow."""
        if not value:
            raise InvalidRequest(f"empty {label}", reason="empty_credential")
        if "," in value:
            # WSGI servers join repeated headers with commas, and the ASGI middleware joins
            # the first and last, so one check catches both. No credential format uses
            # commas. Before the size check: many repeats are a repeat (400), not an
            # oversized credential, under either middleware.
            raise InvalidRequest(f"more than one {label}", reason="duplicate_credential")
        if len(value) > self.max_credential_bytes:
            # Well-formed but impossibly long: an invalid credential (RFC 6750 §3.1
            # invalid_token, "malformed"), refused before any parsing.
            raise InvalidToken(
                f"{label} too large", reason="credential_too_large", scheme=auth.challenge.scheme
            )
        quick, strict = self._quick[id(auth)]
        # Only visible ASCII (RFC 9110 VCHAR); an authenticator whose own parse refuses
        # anything else (a JWT: base64url and dots) answers that itself, with the same 400.
        if not (strict and label == AUTHORIZATION_LABEL) and not visible_ascii(value):
            raise InvalidRequest(f"{label} is not a valid credential", reason="malformed_header")
        return quick(value) if quick is not None else None

    def extract(self, found: Mapping[str, str], query: str) -> Credential | None:
        """`(authenticator, credential, label, scheme, raw)` for the request's credential,
        or None; `scheme` is the `Authorization` scheme, lowercased, or "" for other places.

        Raises `InvalidRequest` for two credentials (RFC 6750 §3.1: more than one
        method), a malformed `Authorization` header, or credentials in the query string
        where refused. The credential itself is not yet checked: see `first`.
        """
        got: Credential | None = None
        known = self._known
        authz = found.get("authorization")
        if authz is not None:
            got = known.get(authz)
            if got is None or not got[3]:  # [3]: a scheme, so it was an Authorization value
                scheme, _, token = authz.partition(" ")
                scheme = scheme.lower()
                auths = self.by_scheme.get(scheme)
                if auths is not None:
                    token = token.lstrip(" ")
                    owner = auths[0] if len(auths) == 1 else self._owner(scheme, auths, token)
                    got = (owner, token, AUTHORIZATION_LABEL, scheme, authz)
                elif not token.strip() or not scheme:
                    raise InvalidRequest(
                        "malformed Authorization header", reason="malformed_header"
                    )
        for name, auth, label in self.header_auths:
            value = found.get(name)
            if value is not None:
                if got is not None:
                    raise InvalidRequest("more than one credential", reason="multiple_credentials")
                seen = known.get(value)
                got = (
                    seen
                    if seen is not None and seen[0] is auth and not seen[3]
                    else (auth, value.strip(" "), label, "", value)
                )
        if query and self._mentions_credential(query):
            q = self._from_query(query)
            if q is not None:
                if got is not None:
                    raise InvalidRequest("more than one credential", reason="multiple_credentials")
                got = q
        return got

    def remember(self, credential: Credential) -> None:
        """Keep how a header value that just authenticated parses, so the next request
        with it skips the parse, and hands the cache the very string object it stored
        (whose hash is computed already). Only verified values get in; bounded."""
        raw = credential[4]
        if raw is not None:
            if len(self._known) >= _KNOWN_MAX:
                self._known.clear()
            self._known[raw] = credential

    def _mentions_credential(self, query: str) -> bool:
        # A substring scan first: most query strings never need parsing. A loop, not
        # any() over a generator: this runs for every request with a query string.
        for name in self._query_names:  # noqa: SIM110 (measured: any() costs 2.8k instructions)
            if name in query:
                return True
        return False

    def _owner(self, scheme: str, auths: list[Authenticator], token: str) -> Authenticator:
        if len(token) > self.max_credential_bytes:
            return auths[0]  # junk that `first` refuses anyway
        # A JWT goes to the authenticator of its (unverified) `iss`: one payload decode
        # and one dict lookup, however many issuers share the scheme.
        routes = self._issuer_routes.get(scheme)
        if routes:
            payload = peek_payload(token)
            iss = payload.get("iss") if payload is not None else None
            if type(iss) is str:
                owner = routes.get(iss)
                if owner is not None:
                    return owner
        # Then other specific owners, then a fallback such as introspection; never one
        # after another on failure.
        for auth in auths:
            if (
                not getattr(auth, "fallback", False)
                and getattr(auth, "issuer_route", None) is None
                and auth.accepts(token)
            ):
                return auth
        for auth in auths:
            if getattr(auth, "fallback", False):
                return auth
        return auths[-1]

    def _from_query(self, query: str) -> Credential | None:
        got = None
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name in self.refused_query_names:
                raise InvalidRequest(
                    "credentials in the query string are not accepted",
                    reason="query_credential",
                )
            auth = self.by_query.get(name)
            if auth is not None:
                if got is not None:
                    raise InvalidRequest("more than one credential", reason="multiple_credentials")
                got = (auth, value, f"{name} parameter", "", None)
        return got

    def is_preflight(self, method: str, found: Mapping[str, str]) -> bool:
        """Whether a request without credentials is a CORS preflight to let through.

        `method` is the method as the server gave it, never normalised: CORS layers
        (Starlette's CORSMiddleware) answer only an exact `OPTIONS`, and servers (h11)
        pass `options` on as sent, so a preflight by any other spelling would reach the
        app instead. The middleware also refuses one with a body (browsers send none)
        and passes on only a CORS layer's answer: see `preflight_answer`.
        """
        return (
            self.allow_cors_preflight
            and method == "OPTIONS"
            and "access-control-request-method" in found
            # CORSMiddleware answers only a real preflight, with an Origin; anything
            # else would reach the app unauthenticated.
            and "origin" in found
        )

    def preflight_denial(self, request: RequestInfo) -> ErrorResponse:
        """The answer to a preflight that no CORS layer answered: what a request without
        credentials gets, logged under its own reason (a CORS layer is missing inside)."""
        error = MissingCredentials(reason="preflight_not_answered")
        return self.deny(error, request)

    def effective_scheme(self, scheme: str, client: str | None, found: Mapping[str, str]) -> str:
        """The scheme the client used: the server's, or a trusted proxy's word for it."""
        if client and self.trusted_proxies and self._trusted(client):
            proto = _forwarded_proto(found)
            if proto in ("http", "https", "ws", "wss"):
                return proto
        return scheme

    def check_transport(self, scheme: str, client: str | None, found: Mapping[str, str]) -> None:
        """Refuse credentials over plain HTTP when `require_https` is set."""
        if self.effective_scheme(scheme, client, found) not in ("https", "wss"):
            raise InvalidRequest("credentials must be sent over HTTPS", reason="insecure_transport")

    def request_url(
        self, scheme: str, client: str | None, found: Mapping[str, str], host: str, path: str
    ) -> str:
        """The URL the client addressed (for DPoP `htu`), without query."""
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        scheme = self.effective_scheme(scheme, client, found)
        scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
        return f"{scheme}://{found.get('host') or host}{path}"

    def throttle_subjects(
        self,
        throttle: Throttle,
        client: str | None,
        found: Mapping[str, str],
        credential: Credential,
    ) -> list[str]:
        """The throttle counters of a request: its client address (a trusted proxy's
        `X-Forwarded-For`, rightmost entry, else the socket peer) and its API key id."""
        address = client
        if self.trusted_proxies:
            address = client_address(client, self._trusted, found.get("x-forwarded-for"))
        return throttle.subjects(address, credential[0], credential[1])

    def _trusted(self, client: str) -> bool:
        try:
            addr = ipaddress.ip_address(client)
        except ValueError:
            return False
        return any(addr in net for net in self.trusted_proxies)

    def check_binding(
        self,
        auth: Authenticator,
        scheme: str,
        token: str,
        identity: Identity,
        proof: str | None,
    ) -> tuple[DPoPVerifier, str]:
        """DPoP (RFC 9449 §7.1): a bound token needs the DPoP scheme and a valid proof
        made with its key; the DPoP scheme needs a bound token. Runs on every request
        (a proof is single-use), after the token itself was checked or found cached.
        Returns the verifier and the proof, for the caller to verify (sync or async)."""
        verifier: DPoPVerifier | None = getattr(auth, "dpop_verifier", None)
        if scheme != "dpop":
            # With DPoP on or off here: a bound token used as a bearer token is exactly
            # the stolen-token replay its binding exists to stop.
            raise InvalidToken(
                "DPoP-bound token presented as a bearer token",
                reason="dpop_bound_as_bearer",
                scheme="Bearer",
                context={"sub": identity.subject},
            )
        if verifier is None:  # pragma: no cover - the scheme is only routed when enabled
            raise InvalidRequest("DPoP is not accepted here", reason="dpop_off")
        if identity.dpop_jkt is None:
            raise InvalidToken(
                "token is not DPoP-bound",
                reason="dpop_unbound",
                scheme="DPoP",
                context={"sub": identity.subject},
            )
        if not proof:
            raise DPoPError("DPoP proof missing", reason="dpop_missing")
        if "," in proof:
            raise DPoPError("more than one DPoP proof", reason="dpop_multiple")
        return verifier, proof

    def admit(
        self,
        decision: Decision,
        credential: Credential,
        identity: Identity,
        found: Mapping[str, str],
        method: str,
        url: Callable[[], str],
    ) -> None:
        """After the credential checked out: its DPoP binding, then the route's scopes.
        Middlewares call this only when there is something to check."""
        auth, token, _label, scheme, _raw = credential
        if scheme == "dpop" or identity.dpop_jkt is not None:
            verifier, proof = self.check_binding(auth, scheme, token, identity, found.get("dpop"))
            verifier.verify(
                proof, method=method, url=url(), access_token=token, jkt=identity.dpop_jkt
            )
        if decision.scopes:
            self.authorize(
                decision, identity, "DPoP" if scheme == "dpop" else auth.challenge.scheme
            )

    async def aadmit(
        self,
        decision: Decision,
        credential: Credential,
        identity: Identity,
        found: Mapping[str, str],
        method: str,
        url: Callable[[], str],
    ) -> None:
        """`admit` on an event loop: a replay cache's I/O (Redis) is awaited."""
        auth, token, _label, scheme, _raw = credential
        if scheme == "dpop" or identity.dpop_jkt is not None:
            verifier, proof = self.check_binding(auth, scheme, token, identity, found.get("dpop"))
            await verifier.averify(
                proof, method=method, url=url(), access_token=token, jkt=identity.dpop_jkt
            )
        if decision.scopes:
            self.authorize(
                decision, identity, "DPoP" if scheme == "dpop" else auth.challenge.scheme
            )

    def authorize(self, decision: Decision, identity: Identity, scheme: str | None = None) -> None:
        """403 unless the identity holds the route's scopes; the error goes on the
        challenge of the scheme the credential came with (RFC 6750 §3, RFC 9449 §7.1)."""
        if decision.scopes and not decision.scopes <= identity.scopes:
            raise InsufficientScope(
                decision.scopes,
                scheme=scheme,
                context={"subject": identity.subject, "key_id": identity.key_id},
            )

    def deny(self, error: AuthError, request: RequestInfo) -> ErrorResponse:
        """Log the failure (never the credential) and build the response."""
        if self.log.isEnabledFor(logging.INFO):
            context = "".join(
                f" {k}={_log_value(v)}" for k, v in error.context.items() if v is not None
            )
            self.log.info(
                "authentication failed: reason=%s status=%d method=%s path=%r client=%s%s",
                error.reason,
                error.status,
                request.method,
                request.path,
                request.client,
                context,
            )
        if self.on_error is not None:
            custom = self.on_error(error, request)
            if custom is not None:
                return custom
        return error.render(self.challenges)


def preflight_answer(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]] | None:
    """What of an answer to an unauthenticated preflight may leave: its `Access-Control-*`
    and `Vary` headers, or None when it has no `Access-Control-Allow-*` header at all.

    A browser reads nothing else of a preflight's answer (not even its body), and a CORS
    layer always says what it allows. An answer without that came from something else,
    most likely the app itself when no CORS layer sits inside: an unauthenticated
    request to the app, whose response must not leave. The status goes out as it is.
    """
    kept = []
    allows = False
    for name, value in headers:
        low = name.lower()
        if low.startswith("access-control-"):
            kept.append((name, value))
            allows = allows or low.startswith("access-control-allow-")
        elif low == "vary":
            kept.append((name, value))
    return kept if allows else None


def _log_value(value: object) -> str:
    # Context values may come from a refused token (its `kid`, `iss`, `sub`): the sender's
    # words. Anything but visible ASCII is quoted and escaped, so no one can break the
    # line, colour a terminal or append a field of their own (`x sub=admin`).
    text = str(value)
    return text if visible_ascii(text) else repr(text)


def _forwarded_proto(found: Mapping[str, str]) -> str | None:
    # Like werkzeug's ProxyFix: only the rightmost value, set by the proxy we trust.
    # X-Forwarded-Proto first: proxies that set it (nginx, most load balancers) pass a
    # client's own Forwarded header through untouched.
    xfp = found.get("x-forwarded-proto")
    if xfp:
        return xfp.rsplit(",", 1)[-1].strip().lower()
    fwd = found.get("forwarded")
    if fwd:
        last = fwd.rsplit(",", 1)[-1]
        for part in last.split(";"):
            k, _, v = part.strip().partition("=")
            if k.lower() == "proto":
                return v.strip('"').lower()
    return None

"""The ASGI middleware."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Unpack
from urllib.parse import quote

from .authenticator import Authenticator, RequestInfo
from .errors import AuthError, ErrorResponse, MissingCredentials
from .flow import AsyncDriver
from .gate import Credential, Gate, GateOptions, preflight_answer
from .identity import ANONYMOUS, ANONYMOUS_USER, Identity
from .routing import below_root, path_reader
from .rules import Decision, strictest
from .types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("asgi_auth")


class AuthMiddleware:
    """Authenticate every HTTP and WebSocket request before it reaches `app`.

    ```python
    app.add_middleware(AuthMiddleware, authenticators=[APIKeyAuth(store)],
                       public_paths=["/health"])
    ```

    On success `scope["auth"]` is the `Identity` and `scope["user"]` an `AuthUser`, so
    Starlette's `requires` and `request.user` work. On failure the app is never called:
    HTTP gets a 400/401/403/503 JSON answer with an RFC 6750 `WWW-Authenticate` header;
    WebSocket gets that answer where the server supports the denial-response extension,
    else a close with code 1008 (1013 when a backend is down) before the handshake
    completes. Other scope types (lifespan) pass straight through. See `GateOptions`
    for the options.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        authenticators: Sequence[Authenticator],
        public_paths: Sequence[str] = (),
        **options: Unpack[GateOptions],
    ) -> None:
        self.app = app
        self.gate = Gate(authenticators, logger=logger, public_paths=public_paths, **options)
        self._driver = AsyncDriver()
        self._wanted = {name.encode("latin-1"): name for name in self.gate.wanted}
        # Bound once: each saves an attribute lookup per request on the hot path.
        self._decide = self.gate.rules.decide
        self._extract = self.gate.extract
        self._resource_path = self.gate.resource_path
        # None: the usual reading, below root_path; else the app routes another way.
        self._read_path = path_reader(app, self.gate.route_path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        gate = self.gate
        method = scope["method"] if kind == "http" else "GET"
        if method != "GET" and not method.isupper():
            # Servers pass `post` through and frameworks route it as POST: rules must too.
            method = method.upper()
        if scope.get("root_path") or self._read_path is not None:
            path, decision = self._judge(scope, method)
        else:
            path = scope["path"]
            decision = self._decide(method, path)
        if path == self._resource_path and method in ("GET", "HEAD") and kind == "http":
            assert gate.resource_response is not None
            await _respond(gate.resource_response, send)
            return
        if decision.access == "public":
            scope["auth"], scope["user"] = ANONYMOUS, ANONYMOUS_USER
            await self.app(scope, receive, send)
            return

        wanted = self._wanted
        found: dict[str, str] = {}
        repeats: dict[str, bytes] | None = None
        for name, value in scope["headers"]:
            key = wanted.get(name)
            if key is not None:
                if key not in found:
                    found[key] = value.decode("latin-1")
                elif repeats is None:
                    repeats = {key: value}
                else:
                    # Only the last repeat is kept, undecoded: constant work per line, so
                    # 40,000 copies of a header cost what 40,000 other headers do.
                    repeats[key] = value
        if repeats is not None:
            _join_repeats(found, repeats)
        try:
            qs = scope.get("query_string")
            got = self._extract(found, qs.decode("latin-1") if qs else "")
            if got is None:
                if decision.access == "optional":
                    scope["auth"], scope["user"] = ANONYMOUS, ANONYMOUS_USER
                    await self.app(scope, receive, send)
                    return
                if gate.is_preflight(scope.get("method", ""), found) and not _has_body(scope):
                    await self._preflight(scope, receive, send, _info(scope, method, path))
                    return
                raise MissingCredentials()
            auth, token, _label, scheme, _raw = got
            if gate.require_https:
                gate.check_transport(scope.get("scheme", "http"), _client(scope), found)
            identity = auth.cached(token)
            if identity is None:
                identity = await self._verify(got, found, scope, method, path)
            if scheme == "dpop" or identity.dpop_jkt is not None:
                # Only DPoP awaits (its replay check may ask Redis): no coroutine for the rest.
                await gate.aadmit(
                    decision, got, identity, found, method, lambda: _url(gate, scope, found)
                )
            elif decision.scopes:
                gate.authorize(decision, identity, auth.challenge.scheme)
        except AuthError as error:
            await self._deny(
                gate.deny(error, _info(scope, method, path)), error, scope, receive, send
            )
            return
        scope["auth"] = identity
        scope["user"] = identity.user
        await self.app(scope, receive, send)

    async def _verify(
        self, got: Credential, found: dict[str, str], scope: Scope, method: str, path: str
    ) -> Identity:
        """A credential this process has not verified yet: the throttle's check (before
        any verification or store lookup), verification, and a failure counted."""
        gate = self.gate
        auth, token, label, _scheme, _raw = got
        throttle = gate.throttle
        subjects = None
        if throttle is not None:
            subjects = gate.throttle_subjects(throttle, _client(scope), found, got)
            await throttle.acheck(subjects)
        try:
            identity = gate.first(auth, token, label)
            if identity is None:
                flow = auth.flow(token, _info(scope, method, path))
                try:
                    effect = next(flow)  # no I/O needed after all: no await
                except StopIteration as done:
                    identity = done.value
                else:
                    identity = await self._driver.resume(flow, effect)
        except AuthError as error:
            if subjects is not None and throttle is not None and throttle.counts(error):
                await throttle.afailed(subjects)
            raise
        gate.remember(got)
        return identity

    def _judge(self, scope: Scope, method: str) -> tuple[str, Decision]:
        """The route path and decision of a mounted app (`root_path`) or of one that
        routes another way (`route_path`); where the path reads two ways, the stricter
        answer wins."""
        path, other = (self._read_path or below_root)(scope, scope.get("root_path") or "")
        decision = self._decide(method, path)
        if other is not None:
            decision = strictest((decision, self._decide(method, other)))
        return path, decision

    async def _preflight(
        self, scope: Scope, receive: Receive, send: Send, request: RequestInfo
    ) -> None:
        """Let a CORS preflight through to the CORS layer inside, unauthenticated (browsers
        send preflights without credentials), and pass on only a CORS layer's answer:
        its status and CORS headers, without a body. Anything else that answers (the app
        itself, when no CORS layer sits inside) is replaced by a 401, so nothing the app
        answers to an unauthenticated request leaves. See `GateOptions`."""
        scope["auth"], scope["user"] = ANONYMOUS, ANONYMOUS_USER
        started = body_given = False

        async def no_body() -> Message:
            # No body reaches the app, even one sent without Content-Length (HTTP/2
            # DATA frames): the first read is an empty body, later ones wait for the
            # disconnect the app may be waiting for.
            nonlocal body_given
            if not body_given:
                body_given = True
                return {"type": "http.request", "body": b"", "more_body": False}
            while True:
                message = await receive()
                if message["type"] != "http.request":
                    return message

        async def answer(message: Message) -> None:
            nonlocal started
            if started or message["type"] != "http.response.start":
                return  # the body, trailers: a preflight's answer has none
            started = True
            raw = message.get("headers") or ()
            kept = preflight_answer([(k.decode("latin-1"), v.decode("latin-1")) for k, v in raw])
            if kept is None:
                await _respond(self.gate.preflight_denial(request), send)
                return
            status = message["status"]
            await _respond(ErrorResponse(status, kept, b""), send, status not in (204, 304))

        await self.app(scope, no_body, answer)
        if not started:  # the app answered nothing: the denial, not the server's 500
            await _respond(self.gate.preflight_denial(request), send)

    async def _deny(
        self, response: ErrorResponse, error: AuthError, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if scope["type"] == "http":
            await _respond(response, send)
            return
        headers = _raw_headers(response)
        # WebSocket: wait for the connect event, then refuse before accepting.
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": response.status,
                    "headers": headers,
                }
            )
            await send({"type": "websocket.http.response.body", "body": response.body})
            return
        # 1008 policy violation; 1013 "try again later" when a backend is down, so
        # clients retry instead of discarding a good credential.
        code = 1013 if error.status == 503 else 1008
        # The description is plain ASCII; a close reason must fit a 125-byte frame.
        await send({"type": "websocket.close", "code": code, "reason": error.description[:120]})


def _join_repeats(found: dict[str, str], last: dict[str, bytes]) -> None:
    """Join each repeated header's first and last lines, as `"first, last"`.

    What the gate reads of a repeated header survives: a comma says it was repeated (two
    credentials or DPoP proofs: 400), the first value is the first, and the rightmost
    value (the forwarded protocol a trusted proxy appended) is the last line's. The lines
    between are never read, so they are never decoded or copied: joining them all by
    concatenation copied the whole string on every repeat, quadratic in their number.
    """
    for key, value in last.items():
        found[key] = f"{found[key]}, {value.decode('latin-1')}"


def _raw_headers(response: ErrorResponse, length: bool = True) -> list[tuple[bytes, bytes]]:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
    if length:  # not on a 204 or 304, which must not carry one (RFC 9110 §8.6)
        headers.append((b"content-length", str(len(response.body)).encode()))
    return headers


async def _respond(response: ErrorResponse, send: Send, length: bool = True) -> None:
    headers = _raw_headers(response, length)
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body})


def _has_body(scope: Scope) -> bool:
    """Whether the request declares a body. A browser's preflight never has one; an
    "exempt" OPTIONS with one is someone else's, and treated as an ordinary request."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


def _client(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _url(gate: Gate, scope: Scope, found: dict[str, str]) -> str:
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if raw else quote(scope.get("root_path", "") + scope["path"])
    server = scope.get("server") or ("localhost", None)
    host = server[0] if server[1] in (None, 80, 443) else f"{server[0]}:{server[1]}"
    return gate.request_url(scope.get("scheme", "http"), _client(scope), found, host, path)


def _info(scope: Scope, method: str, path: str) -> RequestInfo:
    return RequestInfo(method, path, scope.get("scheme", "http"), _client(scope))

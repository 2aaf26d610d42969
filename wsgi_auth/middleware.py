"""The WSGI middleware, over the same core as the ASGI one."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Unpack
from urllib.parse import quote

from asgi_auth.authenticator import Authenticator, RequestInfo
from asgi_auth.errors import AuthError, ErrorResponse, MissingCredentials
from asgi_auth.flow import SyncDriver
from asgi_auth.gate import Credential, Gate, GateOptions, preflight_answer
from asgi_auth.identity import ANONYMOUS, Identity

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("wsgi_auth")

IDENTITY_KEY = "wsgi_auth.identity"


class AuthMiddleware:
    """Authenticate every request before it reaches the WSGI `app`.

    ```python
    flask_app.wsgi_app = AuthMiddleware(flask_app.wsgi_app, authenticators=[APIKeyAuth(store)],
                                        public_paths=["/health"])
    ```

    On success `environ["wsgi_auth.identity"]` is the `Identity` (`ANONYMOUS` on public
    and optional paths without credentials). Same options and answers as
    `asgi_auth.AuthMiddleware`; safe under many threads.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        authenticators: Sequence[Authenticator],
        public_paths: Sequence[str] = (),
        **options: Unpack[GateOptions],
    ) -> None:
        self.app = app
        self.gate = Gate(authenticators, logger=logger, public_paths=public_paths, **options)
        self._driver = SyncDriver()
        # WSGI routers (Flask, Django, Falcon, Bottle) all dispatch on PATH_INFO; "full"
        # judges the whole path instead, mount point (SCRIPT_NAME) included.
        self._full_path = self.gate.route_path == "full"
        # CGI-style environ keys (RFC 3875 §4.1.18) for each header the gate needs.
        self._wanted = [
            ("HTTP_" + name.upper().replace("-", "_"), name) for name in sorted(self.gate.wanted)
        ]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        gate = self.gate
        method = environ.get("REQUEST_METHOD", "GET")
        if method != "GET" and not method.isupper():
            # Servers pass `post` through and frameworks route it as POST: rules must too.
            method = method.upper()
        path = _full_path(environ) if self._full_path else _path(environ)
        if path == gate.resource_path and method in ("GET", "HEAD"):
            assert gate.resource_response is not None
            return _respond(gate.resource_response, start_response)
        decision = gate.rules.decide(method, path)
        if decision.access == "public":
            environ[IDENTITY_KEY] = ANONYMOUS
            return self.app(environ, start_response)
        found = {}
        for key, name in self._wanted:  # a loop: cheaper than a comprehension's frame
            value = environ.get(key)
            if value is not None:
                found[name] = value
        try:
            got = gate.extract(found, environ.get("QUERY_STRING", ""))
            if got is None:
                if decision.access == "optional":
                    environ[IDENTITY_KEY] = ANONYMOUS
                    return self.app(environ, start_response)
                raw_method = environ.get("REQUEST_METHOD", "")  # as sent: see is_preflight
                if gate.is_preflight(raw_method, found) and not _has_body(environ):
                    return self._preflight(environ, start_response, _info(environ, method, path))
                raise MissingCredentials()
            auth, token, _label, scheme, _raw = got
            if gate.require_https:
                gate.check_transport(
                    environ.get("wsgi.url_scheme", "http"), environ.get("REMOTE_ADDR"), found
                )
            identity = auth.cached(token)
            if identity is None:
                identity = self._verify(got, found, environ, method, path)
            if scheme == "dpop" or identity.dpop_jkt is not None:
                gate.admit(
                    decision, got, identity, found, method, lambda: _url(gate, environ, found)
                )
            elif decision.scopes:  # no closure, no call through `admit`: the common case
                gate.authorize(decision, identity, auth.challenge.scheme)
        except AuthError as error:
            return _respond(gate.deny(error, _info(environ, method, path)), start_response)
        environ[IDENTITY_KEY] = identity
        return self.app(environ, start_response)

    def _verify(
        self,
        got: Credential,
        found: dict[str, str],
        environ: WSGIEnvironment,
        method: str,
        path: str,
    ) -> Identity:
        """As `asgi_auth.AuthMiddleware._verify`: throttle check, verification, and a
        failure counted."""
        gate = self.gate
        auth, token, label, _scheme, _raw = got
        throttle = gate.throttle
        subjects = None
        if throttle is not None:
            subjects = gate.throttle_subjects(throttle, environ.get("REMOTE_ADDR"), found, got)
            throttle.check(subjects)
        try:
            identity = gate.first(auth, token, label)
            if identity is None:
                identity = self._driver.run(auth.flow(token, _info(environ, method, path)))
        except AuthError as error:
            if subjects is not None and throttle is not None and throttle.counts(error):
                throttle.failed(subjects)
            raise
        gate.remember(got)
        return identity

    def _preflight(
        self, environ: WSGIEnvironment, start_response: StartResponse, request: RequestInfo
    ) -> list[bytes]:
        """Let a CORS preflight through to the CORS layer inside, unauthenticated, and pass
        on only a CORS layer's answer (status and CORS headers, no body); else a 401. As
        `asgi_auth.AuthMiddleware._preflight`; see `GateOptions`."""
        environ[IDENTITY_KEY] = ANONYMOUS
        environ["wsgi.input"] = io.BytesIO()  # no body reaches the app, declared or not
        environ["CONTENT_LENGTH"] = "0"
        got: list[tuple[str, list[tuple[str, str]]]] = []

        def capture(
            status: str, headers: list[tuple[str, str]], exc_info: object = None
        ) -> Callable[[bytes], object]:
            got.append((status, headers))  # nothing was sent: a later call replaces it
            return _discard

        result = self.app(environ, capture)
        try:
            if not got:
                # PEP 3333: an app may call start_response only when first iterated.
                for _chunk in result:
                    break
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        kept = preflight_answer(got[-1][1]) if got else None
        if kept is None:
            return _respond(self.gate.preflight_denial(request), start_response)
        status = got[-1][0]
        if status[:3] not in ("204", "304"):  # those must not carry a Content-Length
            kept.append(("Content-Length", "0"))
        start_response(status, kept)
        return []


def _has_body(environ: WSGIEnvironment) -> bool:
    """Whether the request declares a body. A browser's preflight never has one; an
    "exempt" OPTIONS with one is someone else's, and treated as an ordinary request."""
    length = environ.get("CONTENT_LENGTH", "").strip()
    return length not in ("", "0") or "HTTP_TRANSFER_ENCODING" in environ


def _discard(data: bytes) -> None:
    """The `write` callable of a preflight's answer: its body does not leave."""


def _respond(response: ErrorResponse, start_response: StartResponse) -> list[bytes]:
    headers = [*response.headers, ("Content-Length", str(len(response.body)))]
    start_response(f"{response.status} {_REASONS.get(response.status, 'Error')}", headers)
    return [response.body]


_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}


def _path(environ: WSGIEnvironment) -> str:
    path: str = environ.get("PATH_INFO", "") or "/"
    if not path.isascii():
        # PEP 3333 hands over the raw bytes as latin-1; match on the UTF-8 text.
        path = path.encode("latin-1").decode("utf-8", "replace")
    return path


def _full_path(environ: WSGIEnvironment) -> str:
    """The mount point (SCRIPT_NAME) and the path below it (`route_path="full"`)."""
    return _path({"PATH_INFO": environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")})


def _url(gate: Gate, environ: WSGIEnvironment, found: dict[str, str]) -> str:
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        path = raw.split("?", 1)[0]
    else:
        full = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        path = quote(full.encode("latin-1"))  # PEP 3333 bytes-as-latin-1 back to bytes
    port = environ.get("SERVER_PORT", "")
    host = environ.get("SERVER_NAME", "localhost")
    if port and port not in ("80", "443"):
        host = f"{host}:{port}"
    return gate.request_url(
        environ.get("wsgi.url_scheme", "http"), environ.get("REMOTE_ADDR"), found, host, path
    )


def _info(environ: WSGIEnvironment, method: str, path: str) -> RequestInfo:
    return RequestInfo(
        method, path, environ.get("wsgi.url_scheme", "http"), environ.get("REMOTE_ADDR")
    )

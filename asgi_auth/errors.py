"""Authentication errors that carry their own HTTP meaning (RFC 6750 §3).

Each error knows its status, its RFC 6750 error code and a reason code for logs. The
middleware turns one into a response with `render()`; nothing here ever holds a credential.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

# RFC 6750 §3: error_description and scope values are limited to these characters, so a
# description can never break out of its quoted-string.
_UNSAFE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")


def _quote(value: str) -> str:
    return '"' + _UNSAFE.sub("?", value) + '"'


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """A framework-free HTTP response: what an error hook may return."""

    status: int
    headers: Sequence[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    """One `WWW-Authenticate` challenge the middleware offers, e.g. `Bearer realm="api"`."""

    scheme: str
    params: Sequence[tuple[str, str]] = ()

    def render(self, extra: Sequence[tuple[str, str]] = ()) -> str:
        parts = [f"{k}={_quote(v)}" for k, v in (*self.params, *extra)]
        return f"{self.scheme} {', '.join(parts)}" if parts else self.scheme


class AuthError(Exception):
    """Base of every authentication failure.

    `reason` is a stable machine code for logs and metrics; `description` is safe to
    show a client; `context` holds non-secret facts (key id, `kid`, `iss`) for logs.
    """

    status: int = 401
    error: str | None = "invalid_token"
    #: The challenge scheme this error belongs to; None means the first one offered.
    scheme: str | None = None

    def __init__(
        self,
        description: str,
        *,
        reason: str = "invalid",
        scheme: str | None = None,
        context: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.reason = reason
        if scheme is not None:
            self.scheme = scheme
        self.context: Mapping[str, object] = context or {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, description={self.description!r})"

    def challenge_params(self) -> list[tuple[str, str]]:
        params = []
        if self.error:
            params.append(("error", self.error))
            if self.description:
                params.append(("error_description", self.description))
        return params

    def headers(self, challenges: Sequence[Challenge]) -> list[tuple[str, str]]:
        if not challenges:
            return []
        target = next((c for c in challenges if c.scheme == self.scheme), challenges[0])
        value = ", ".join(
            c.render(self.challenge_params()) if c is target else c.render() for c in challenges
        )
        return [("WWW-Authenticate", value)]

    def body(self) -> dict[str, str]:
        out = {"error": self.error or "unauthorized"}
        if self.description:
            out["error_description"] = self.description
        return out

    def render(self, challenges: Sequence[Challenge]) -> ErrorResponse:
        body = json.dumps(self.body(), separators=(",", ":")).encode()
        headers = [
            ("Content-Type", "application/json"),
            ("Cache-Control", "no-store"),
            *self.headers(challenges),
        ]
        return ErrorResponse(self.status, headers, body)


class MissingCredentials(AuthError):
    """401 without an error code: RFC 6750 §3.1 says a request that carries no
    authentication information gets a bare challenge."""

    error = None

    def __init__(
        self, description: str = "authentication required", *, reason: str = "missing_credentials"
    ) -> None:
        super().__init__(description, reason=reason)

    def body(self) -> dict[str, str]:
        return {"error": "unauthorized", "error_description": self.description}


class InvalidToken(AuthError):
    """401 `invalid_token`: the credential is expired, revoked, malformed or unknown."""


class InvalidRequest(AuthError):
    """400 `invalid_request`: two credentials, a header that is not a credential."""

    status = 400
    error = "invalid_request"


class InsufficientScope(AuthError):
    """403 `insufficient_scope`: a valid credential without the scopes the route needs."""

    status = 403
    error = "insufficient_scope"

    def __init__(
        self,
        required: frozenset[str],
        *,
        scheme: str | None = None,
        context: Mapping[str, object] | None = None,
    ):
        self.required = required
        super().__init__(
            "the request requires higher privileges than provided by the credential",
            reason="insufficient_scope",
            scheme=scheme,
            context=context,
        )

    def challenge_params(self) -> list[tuple[str, str]]:
        return [*super().challenge_params(), ("scope", " ".join(sorted(self.required)))]

    def body(self) -> dict[str, str]:
        return {**super().body(), "scope": " ".join(sorted(self.required))}


class ServiceUnavailable(AuthError):
    """503 with `Retry-After`: a dependency (key store, JWKS, introspection) failed and no
    usable cached material exists. Never a 401, which would make clients drop good tokens."""

    status = 503
    error = "temporarily_unavailable"

    def __init__(
        self,
        description: str = "authentication backend unavailable",
        *,
        retry_after: int = 5,
        reason: str = "backend_unavailable",
        context: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(description, reason=reason, context=context)
        self.retry_after = retry_after

    def headers(self, challenges: Sequence[Challenge]) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after))]


class TooManyRequests(AuthError):
    """429 with `Retry-After`: too many failed credentials from this client address or for
    this API key id within the throttle's window (see `asgi_auth.throttle`). No challenge:
    sending another credential now does not help."""

    status = 429
    error = "too_many_requests"

    def __init__(
        self,
        description: str = "too many failed credentials; retry later",
        *,
        retry_after: int = 1,
        reason: str = "throttled",
        context: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(description, reason=reason, context=context)
        self.retry_after = retry_after

    def headers(self, challenges: Sequence[Challenge]) -> list[tuple[str, str]]:
        return [("Retry-After", str(self.retry_after))]

"""authgate for WSGI apps (Flask, Django, Falcon, Bottle ...).

The authenticators are the very objects `asgi_auth` exports: one instance may serve an
ASGI and a WSGI app at once.
"""

from asgi_auth import (
    ANONYMOUS,
    APIKeyAuth,
    Authenticator,
    AuthError,
    ErrorResponse,
    Identity,
    IntrospectionAuth,
    JWTAuth,
    ProtectedResource,
    Rule,
)

from .middleware import IDENTITY_KEY, AuthMiddleware

__all__ = [
    "ANONYMOUS",
    "IDENTITY_KEY",
    "APIKeyAuth",
    "AuthError",
    "AuthMiddleware",
    "Authenticator",
    "ErrorResponse",
    "Identity",
    "IntrospectionAuth",
    "JWTAuth",
    "ProtectedResource",
    "Rule",
]

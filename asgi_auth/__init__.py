"""authgate for ASGI apps, and the framework-free core shared with `wsgi_auth`."""

from .apikey import APIKeyAuth
from .authenticator import Authenticator, RequestInfo
from .errors import (
    AuthError,
    Challenge,
    ErrorResponse,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingCredentials,
    ServiceUnavailable,
)
from .gate import GateOptions
from .identity import ANONYMOUS, AuthUser, Identity
from .introspection import IntrospectionAuth
from .jwt import JWTAuth
from .middleware import AuthMiddleware
from .resource import ProtectedResource
from .rules import Rule

__all__ = [
    "ANONYMOUS",
    "APIKeyAuth",
    "AuthError",
    "AuthMiddleware",
    "AuthUser",
    "Authenticator",
    "Challenge",
    "ErrorResponse",
    "GateOptions",
    "Identity",
    "InsufficientScope",
    "IntrospectionAuth",
    "InvalidRequest",
    "InvalidToken",
    "JWTAuth",
    "MissingCredentials",
    "ProtectedResource",
    "RequestInfo",
    "Rule",
    "ServiceUnavailable",
]
__version__ = "0.1.0"

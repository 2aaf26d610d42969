"""The result of a successful check, and the user object frameworks expect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_EMPTY: Mapping[str, Any] = MappingProxyType({})


class AuthUser:
    """`scope["user"]` for ASGI apps: Starlette's `request.user` protocol over an Identity."""

    __slots__ = ("identity",)

    def __init__(self, identity: Identity) -> None:
        self.identity = identity

    @property
    def is_authenticated(self) -> bool:
        return self.identity.method != "anonymous"

    @property
    def display_name(self) -> str:
        ident = self.identity
        return ident.name or ident.subject

    def __repr__(self) -> str:
        return f"AuthUser(subject={self.identity.subject!r}, method={self.identity.method!r})"


@dataclass(frozen=True, slots=True)
class Identity:
    """Who made the request, as established by an authenticator.

    Immutable and shared: the same instance is handed to every request that presents the
    same cached credential. `scopes` makes it usable as Starlette's `request.auth`, so
    `starlette.authentication.requires` works unchanged.
    """

    subject: str
    scopes: frozenset[str]
    method: str
    claims: Mapping[str, Any] = field(default_factory=lambda: _EMPTY, compare=False)
    expires_at: float | None = None
    key_id: str | None = None
    client_id: str | None = None
    issuer: str | None = None
    dpop_jkt: str | None = None
    name: str | None = None
    #: The `scope["user"]` object for this identity, made once rather than per request.
    user: AuthUser = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "user", AuthUser(self))

    @property
    def is_authenticated(self) -> bool:
        return self.method != "anonymous"

    def has_scopes(self, *scopes: str) -> bool:
        """True when every one of `scopes` was granted."""
        return self.scopes.issuperset(scopes)


class _Unfrozen:
    """Identity's exact slot layout without its frozen `__setattr__`: see `build_identity`."""

    __slots__ = Identity.__slots__


def build_identity(
    subject: str,
    scopes: frozenset[str],
    method: str,
    claims: Mapping[str, Any],
    expires_at: float | None,
    key_id: str | None,
    client_id: str | None,
    issuer: str | None,
    dpop_jkt: str | None,
    name: str | None = None,
) -> Identity:
    """The same `Identity` as the constructor makes, for authenticators' first-seen paths:
    about 0.5 µs instead of 3, since a frozen dataclass sets each field through
    `object.__setattr__`. Plain stores on an object of identical layout, then a
    `__class__` switch, which CPython permits between classes with the same slots."""
    obj: Any = _Unfrozen()
    obj.subject = subject
    obj.scopes = scopes
    obj.method = method
    obj.claims = claims
    obj.expires_at = expires_at
    obj.key_id = key_id
    obj.client_id = client_id
    obj.issuer = issuer
    obj.dpop_jkt = dpop_jkt
    obj.name = name
    obj.user = AuthUser(obj)
    obj.__class__ = Identity
    return obj  # type: ignore[no-any-return]


ANONYMOUS = Identity(subject="", scopes=frozenset(), method="anonymous")
"""What public and optional-auth routes see when no credential was sent."""


ANONYMOUS_USER = ANONYMOUS.user

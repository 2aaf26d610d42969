"""`build_identity` (the authenticators' fast path) makes exactly what `Identity(...)` makes."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from types import MappingProxyType

import pytest

from asgi_auth import Identity
from asgi_auth.identity import build_identity

ARGS = (
    "sub-1",
    frozenset({"a", "b"}),
    "jwt",
    MappingProxyType({"x": 1}),
    2e9,
    None,
    "cli",
    "iss",
    "jkt",
)


def test_fast_builder_equals_constructor() -> None:
    fast = build_identity(*ARGS)
    slow = Identity(*ARGS)
    assert type(fast) is Identity
    assert fast == slow
    assert hash(fast) == hash(slow)
    assert repr(fast) == repr(slow)
    assert fast.user.identity is fast
    assert fast.user.display_name == "sub-1"


def test_fast_identity_is_frozen_and_copyable() -> None:
    fast = build_identity(*ARGS, name="svc")
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.subject = "other"  # type: ignore[misc]
    assert dataclasses.replace(fast, subject="s2").subject == "s2"
    assert copy.copy(fast) == fast
    plain = build_identity(
        "s", frozenset(), "api_key", MappingProxyType({}), None, "k1", None, None, None
    )
    assert pickle.loads(pickle.dumps(dataclasses.replace(plain, claims={}))).key_id == "k1"

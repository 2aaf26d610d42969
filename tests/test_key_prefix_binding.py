"""An API key's prefix is bound to its stored record (issue 13, item 3).

Users treat prefixes as an environment boundary (`test_` keys never work where only
`live_` keys are allowed). The checksum is a CRC, not a MAC: anyone holding a `test_` key
can re-spell it `live_...` and recompute the checksum. Such a key must be refused in every
store, whatever the cache holds, by the core and through both middlewares.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asgi_auth import APIKeyAuth
from asgi_auth.authenticator import RequestInfo
from asgi_auth.errors import AuthError, InvalidToken
from asgi_auth.flow import SyncDriver
from asgi_auth.keys import KeyStore, MemoryKeyStore, SQLiteKeyStore
from asgi_auth.keys.format import KeyFormatError, _checksum, assemble, new_key_id, new_secret, parse
from tests.helpers_core import Clock, make_client

REQ = RequestInfo("GET", "/", "https", "127.0.0.1")


def respelled(key: str, prefix: str) -> str:
    """`key` with another prefix and a checksum that matches it: well-formed."""
    _, key_id, secret = parse(key)
    other = assemble(prefix, key_id, secret)
    assert parse(other) == (prefix, key_id, secret)  # the format check alone lets it in
    return other


@pytest.fixture(params=["memory", "sqlite", "sqlite-reopened"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], KeyStore]]:
    """A factory: the store the key was created in, or (sqlite-reopened) a second
    `SQLiteKeyStore` on the same file, so the record comes from disk."""
    if request.param == "memory":
        mem = MemoryKeyStore()
        yield lambda: mem
        return
    db = tmp_path / "keys.db"
    first = SQLiteKeyStore(db, hash_key=b"k" * 32)
    opened = [first]
    if request.param == "sqlite":
        yield lambda: first
    else:

        def reopen() -> KeyStore:
            s = SQLiteKeyStore(db, hash_key=b"k" * 32)
            opened.append(s)
            return s

        yield reopen
    for s in opened:
        s.close()


def check(auth: APIKeyAuth, key: str) -> object:
    hit = auth.cached(key)
    return hit if hit is not None else SyncDriver().run(auth.flow(key, REQ))


def refused(auth: APIKeyAuth, key: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        check(auth, key)
    err = info.value
    assert isinstance(err, InvalidToken)
    assert err.status == 401
    return err


@pytest.mark.parametrize("verified_first", [False, True], ids=["cold", "original-cached"])
def test_a_test_key_respelled_live_is_refused(
    store: Callable[[], KeyStore], verified_first: bool
) -> None:
    test_key = store().create("ci", ["deploy"], prefix="test").key
    live_key = respelled(test_key, "live")
    clock = Clock()
    both = APIKeyAuth(store(), prefixes=("live", "test"), clock=clock)
    live_only = APIKeyAuth(store(), prefixes=("live",), clock=clock)
    if verified_first:
        # The original is verified and cached (hit cache and record cache) first: the
        # re-spelled key must not ride on either.
        assert check(both, test_key) is not None
        assert both.cached(test_key) is not None
    assert refused(both, live_key).reason == "prefix_mismatch"
    assert refused(live_only, live_key).reason == "prefix_mismatch"
    # Asked again (record now cached by id): still refused, and never cached as a hit.
    assert refused(both, live_key).reason == "prefix_mismatch"
    assert both.cached(live_key) is None
    assert live_only.cached(live_key) is None
    # The original keeps working where `test` is allowed, and only there.
    assert check(both, test_key) is not None
    assert refused(live_only, test_key).reason == "wrong_prefix"


def test_an_added_key_is_bound_to_its_prefix_too() -> None:
    store = MemoryKeyStore()
    configured = assemble("live", new_key_id(), new_secret())
    store.add(configured, "partner")
    assert store.get(parse(configured)[1]).prefix == "live"  # type: ignore[union-attr]
    auth = APIKeyAuth(store, prefixes=("live", "test"))
    assert refused(auth, respelled(configured, "test")).reason == "prefix_mismatch"
    assert check(auth, configured) is not None


def test_a_prefix_the_format_forbids_is_not_stored() -> None:
    # `rpartition("_")` makes `a_b` the prefix of `a_b_<body>`; no key can be issued with
    # it (check_prefix), so `add` must not store one either.
    head = f"a_b_{new_key_id()}{new_secret()}"
    with pytest.raises(KeyFormatError):
        parse(head + _checksum(head))
    with pytest.raises(ValueError, match="well-formed"):
        MemoryKeyStore().add(head + _checksum(head), "odd")


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_through_the_middleware(kind: str) -> None:
    store = MemoryKeyStore()
    test_key = store.create("ci", prefix="test").key
    live_key = respelled(test_key, "live")
    for prefixes in (("live", "test"), ("live",)):
        client = make_client(kind, [APIKeyAuth(store, prefixes=prefixes)])
        if "test" in prefixes:
            assert client("/x", headers=[("X-API-Key", test_key)]).status == 200
        for _ in range(2):  # the second time with the record cached by id
            reply = client("/x", headers=[("X-API-Key", live_key)])
            assert reply.status == 401, prefixes
            assert not reply.reached
            assert 'error="invalid_token"' in reply.headers["www-authenticate"]
            assert test_key not in reply.body.decode() and live_key not in reply.body.decode()
        if "test" in prefixes:
            assert client("/x", headers=[("X-API-Key", test_key)]).status == 200

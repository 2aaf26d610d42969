"""APIKeyAuth's core, driven directly: `flow()` under `SyncDriver`, with an injected clock.

No middleware, no network, no event loop, no sleeps: time moves by `clock.advance()`.
"""

from __future__ import annotations

import asyncio
import string
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from asgi_auth import APIKeyAuth, Identity
from asgi_auth.authenticator import RequestInfo
from asgi_auth.errors import AuthError, InvalidToken, ServiceUnavailable
from asgi_auth.flow import AsyncDriver, Effect, SyncDriver
from asgi_auth.keys import KeyRecord, MemoryKeyStore
from asgi_auth.keys.format import (
    ALPHABET,
    BODY_LEN,
    CHECKSUM_LEN,
    ID_LEN,
    SECRET_LEN,
    KeyFormatError,
    assemble,
    check_prefix,
    new_key_id,
    new_secret,
    parse,
)
from tests.helpers_core import Clock, CountingStore, FailingStore

REQ = RequestInfo("GET", "/", "https", "127.0.0.1")
TTL = 60.0


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> CountingStore:
    s = CountingStore()
    s.clock = clock  # creation, revocation and rotation happen at the test's time
    return s


@pytest.fixture
def auth(store: CountingStore, clock: Clock) -> APIKeyAuth:
    return APIKeyAuth(store, cache_ttl=TTL, negative_ttl=10.0, clock=clock)


def check(auth: APIKeyAuth, key: str) -> Identity:
    """What a middleware does: the hot-path cache, else the full flow."""
    hit = auth.cached(key)
    return hit if hit is not None else SyncDriver().run(auth.flow(key, REQ))


def rejects(auth: APIKeyAuth, key: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        check(auth, key)
    return info.value


# -- key format ---------------------------------------------------------------------------


def test_assemble_and_parse_round_trip() -> None:
    key_id, secret = new_key_id(), new_secret()
    key = assemble("agk", key_id, secret)
    assert key.startswith("agk_")
    assert len(key) == len("agk_") + BODY_LEN == 4 + ID_LEN + SECRET_LEN + CHECKSUM_LEN
    assert set(key[4:]) <= set(ALPHABET)
    assert parse(key) == ("agk", key_id, secret)
    assert parse(key, frozenset({"agk"})) == ("agk", key_id, secret)


def test_new_ids_and_secrets_are_random() -> None:
    assert len({new_secret() for _ in range(200)}) == 200
    assert len({new_key_id() for _ in range(200)}) == 200


def test_checksum_rejects_every_single_character_change() -> None:
    key = assemble("agk", new_key_id(), new_secret())
    others = ALPHABET + "_-.+/=~ "
    changed = 0
    for i, original in enumerate(key):
        for c in others:
            if c == original:
                continue
            with pytest.raises(KeyFormatError):
                parse(key[:i] + c + key[i + 1 :])
            changed += 1
    assert changed == len(key) * (len(others) - 1)


def test_checksum_rejects_truncation_extension_and_swaps() -> None:
    key = assemble("agk", new_key_id(), new_secret())
    for i in range(len(key)):
        with pytest.raises(KeyFormatError):
            parse(key[:i] + key[i + 1 :])  # one character dropped
    with pytest.raises(KeyFormatError):
        parse(key + "0")
    for i in range(4, len(key) - 1):
        if key[i] != key[i + 1]:
            with pytest.raises(KeyFormatError):
                parse(key[:i] + key[i + 1] + key[i] + key[i + 2 :])  # neighbours swapped


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "malformed"),
        ("no-underscore-at-all", "malformed"),
        ("_" + "A" * BODY_LEN, "malformed"),
        ("agk_" + "A" * (BODY_LEN - 1), "malformed"),
        ("agk_" + "A" * (BODY_LEN - 1) + "!", "malformed"),
        ("agk_" + "é" * BODY_LEN, "malformed"),
        ("agk_" + "A" * BODY_LEN, "bad_checksum"),
    ],
)
def test_parse_reasons(text: str, reason: str) -> None:
    with pytest.raises(KeyFormatError) as info:
        parse(text)
    assert info.value.reason == reason
    assert text[4:] not in str(info.value) or not text[4:]


@pytest.mark.parametrize("prefix", ["a", "agk", "live", "sk2", "a" * 16])
def test_good_prefixes(prefix: str) -> None:
    assert check_prefix(prefix) == prefix
    key = assemble(prefix, new_key_id(), new_secret())
    assert parse(key)[0] == prefix


@pytest.mark.parametrize("prefix", ["", "A", "Agk", "1ab", "a_b", "a-b", "a" * 17, "ké"])
def test_bad_prefixes(prefix: str, clock: Clock) -> None:
    with pytest.raises(ValueError):
        check_prefix(prefix)
    with pytest.raises(ValueError):
        MemoryKeyStore().create("x", prefix=prefix)
    with pytest.raises(ValueError):
        APIKeyAuth(MemoryKeyStore(), prefixes=[prefix])


def test_prefix_config(store: CountingStore, clock: Clock) -> None:
    auth = APIKeyAuth(store, prefixes=["live", "test"], clock=clock)
    live = store.create("live", prefix="live").key
    test = store.create("test", prefix="test").key
    default = store.create("default").key
    assert check(auth, live).name == "live"
    assert check(auth, test).name == "test"
    err = rejects(auth, default)
    assert isinstance(err, InvalidToken)
    assert err.reason == "wrong_prefix"
    assert store.calls == [parse(live)[1], parse(test)[1]]  # the wrong prefix cost no lookup
    # The prefix is part of the checksum: swapping it does not make another valid key.
    assert rejects(auth, "test" + live[4:]).reason == "bad_checksum"


def test_identity_from_record(store: CountingStore, auth: APIKeyAuth, clock: Clock) -> None:
    issued = store.create(
        "ci",
        scopes=["deploy", "read"],
        subject="team-a",
        expires_at=clock.now + 3600,
        metadata={"env": "prod"},
    )
    ident = check(auth, issued.key)
    assert ident.subject == "team-a"
    assert ident.scopes == frozenset({"deploy", "read"})
    assert ident.method == "api_key"
    assert ident.key_id == issued.record.key_id
    assert ident.name == "ci"
    assert ident.expires_at == clock.now + 3600
    assert ident.claims == {"name": "ci", "env": "prod"}
    assert ident.is_authenticated
    # Without a subject, the key id stands for the caller.
    anon = store.create("nameless")
    assert check(auth, anon.key).subject == anon.record.key_id


# -- caching ------------------------------------------------------------------------------


def test_cached_key_does_not_call_the_store(store: CountingStore, auth: APIKeyAuth) -> None:
    key = store.create("k").key
    first = check(auth, key)
    assert len(store.calls) == 1
    for _ in range(5):
        assert check(auth, key) is first  # the same immutable Identity, from the hot path
    assert auth.cached(key) is first
    assert len(store.calls) == 1


def test_record_cache_answers_without_yielding(store: CountingStore, auth: APIKeyAuth) -> None:
    key = store.create("k").key
    SyncDriver().run(auth.flow(key, REQ))
    # A second full check of a recently fetched key runs without any I/O.
    flow = auth.flow(key, REQ)
    with pytest.raises(StopIteration) as stop:
        next(flow)
    assert stop.value.value.name == "k"
    assert len(store.calls) == 1


def test_first_check_yields_one_store_effect(store: CountingStore, auth: APIKeyAuth) -> None:
    issued = store.create("k")
    flow = auth.flow(issued.key, REQ)
    effect = next(flow)
    assert isinstance(effect, Effect)
    assert effect.timeout == auth.store_timeout
    assert store.calls == []  # the flow only asks; the driver performs
    with pytest.raises(StopIteration) as stop:
        flow.send(effect.sync())
    assert stop.value.value.key_id == issued.record.key_id


def test_local_store_is_read_without_an_effect(clock: Clock) -> None:
    store = MemoryKeyStore()
    auth = APIKeyAuth(store, clock=clock)
    issued = store.create("k")
    with pytest.raises(StopIteration) as stop:
        next(auth.flow(issued.key, REQ))  # finished at once: no I/O for the driver
    assert stop.value.value.key_id == issued.record.key_id
    assert auth.cached(issued.key) is not None


class SwitchableStore(CountingStore):
    """A networked store that can be taken down and brought back."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def get(self, key_id: str) -> KeyRecord | None:
        self.calls.append(key_id)
        if self.down:
            raise ConnectionError("key store down")
        return MemoryKeyStore.get(self, key_id)


def test_max_stale_serves_a_stale_record_only_while_the_store_fails(clock: Clock) -> None:
    store = SwitchableStore()
    auth = APIKeyAuth(store, cache_ttl=10, max_stale=100, clock=clock)
    issued = store.create("k")
    check(auth, issued.key)
    store.down = True
    clock.advance(10)  # the TTL is over: ask the store, which fails: serve the stale record
    assert check(auth, issued.key).key_id == issued.record.key_id
    assert len(store.calls) == 2
    clock.advance(0.5)  # it just failed: served stale without asking again
    check(auth, issued.key)
    assert len(store.calls) == 2
    clock.advance(0.5)  # a second after the failure: ask again (still down: stale)
    check(auth, issued.key)
    assert len(store.calls) == 3
    clock.advance(99)  # cache_ttl + max_stale after the fetch: nothing stale is left
    err = rejects(auth, issued.key)
    assert isinstance(err, ServiceUnavailable) and err.reason == "key_store_unavailable"
    store.down = False
    assert check(auth, issued.key).key_id == issued.record.key_id  # back, no restart


def test_max_stale_defaults_to_off_and_must_not_be_negative(clock: Clock) -> None:
    store = SwitchableStore()
    auth = APIKeyAuth(store, cache_ttl=10, clock=clock)
    issued = store.create("k")
    check(auth, issued.key)
    store.down = True
    clock.advance(10)
    assert isinstance(rejects(auth, issued.key), ServiceUnavailable)
    with pytest.raises(ValueError, match="max_stale"):
        APIKeyAuth(store, max_stale=-1)


def test_a_stale_record_is_replaced_when_the_store_answers(clock: Clock) -> None:
    store = SwitchableStore()
    auth = APIKeyAuth(store, cache_ttl=10, max_stale=100, clock=clock, max_cache_entries=10)
    issued = store.create("k")
    check(auth, issued.key)
    store._records[issued.record.key_id] = replace(  # revoked where no one announced it
        store._records[issued.record.key_id], revoked_at=clock() - 1
    )
    clock.advance(10)
    assert rejects(auth, issued.key).reason == "revoked"


def test_failing_local_store_is_service_unavailable(clock: Clock) -> None:
    class Broken(FailingStore):
        local = True

    store = Broken(OSError("disk on fire"))
    auth = APIKeyAuth(store, clock=clock)
    err = rejects(auth, store.create("k").key)
    assert isinstance(err, ServiceUnavailable)
    assert (err.status, err.reason, err.context["error"]) == (
        503,
        "key_store_unavailable",
        "OSError",
    )


def test_cache_expires_after_ttl(store: CountingStore, auth: APIKeyAuth, clock: Clock) -> None:
    key = store.create("k").key
    check(auth, key)
    clock.advance(TTL - 1)
    check(auth, key)
    assert len(store.calls) == 1
    clock.advance(1)
    assert auth.cached(key) is None
    check(auth, key)
    assert len(store.calls) == 2


def test_zero_ttl_disables_caching(store: CountingStore, clock: Clock) -> None:
    auth = APIKeyAuth(store, cache_ttl=0, clock=clock)
    key = store.create("k").key
    for _ in range(3):
        check(auth, key)
    assert len(store.calls) == 3


def test_revocation_takes_effect_within_cache_ttl(
    store: CountingStore, auth: APIKeyAuth, clock: Clock
) -> None:
    issued = store.create("k")
    check(auth, issued.key)
    clock.advance(10)
    store.revoke(issued.record.key_id)
    clock.advance(TTL - 10)  # cache_ttl after the key was last fetched
    err = rejects(auth, issued.key)
    assert err.reason == "revoked"
    assert err.context["key_id"] == issued.record.key_id
    assert rejects(auth, issued.key).reason == "revoked"  # and stays refused


def test_invalidate_makes_revocation_immediate(
    store: CountingStore, auth: APIKeyAuth, clock: Clock
) -> None:
    a, b = store.create("a"), store.create("b")
    check(auth, a.key)
    check(auth, b.key)
    store.revoke(a.record.key_id)
    auth.invalidate(a.record.key_id)
    assert rejects(auth, a.key).reason == "revoked"
    check(auth, b.key)  # the other key stays cached
    assert store.calls == [a.record.key_id, b.record.key_id, a.record.key_id]
    auth.invalidate()
    check(auth, b.key)
    assert store.calls[-1] == b.record.key_id
    assert len(store.calls) == 4


def test_a_store_write_reaches_listening_caches_at_once(
    store: CountingStore, auth: APIKeyAuth
) -> None:
    """The store tells `APIKeyAuth` of its own writes: no explicit `invalidate`."""
    issued = store.create("k")
    check(auth, issued.key)
    store.revoke(issued.record.key_id)
    assert auth.cached(issued.key) is None
    assert rejects(auth, issued.key).reason == "revoked"


def test_a_lookup_that_raced_an_invalidation_is_used_but_not_cached(
    store: CountingStore, auth: APIKeyAuth
) -> None:
    """What a lookup read may predate a change announced while it ran: it answers its
    own request, but the next one looks again."""
    issued = store.create("k")
    flow = auth.flow(issued.key, REQ)
    effect = next(flow)
    record = effect.sync()  # read ...
    auth.invalidate(issued.record.key_id)  # ... then a change is announced
    with pytest.raises(StopIteration) as stop:
        flow.send(record)
    assert stop.value.value.key_id == issued.record.key_id
    assert auth.cached(issued.key) is None
    assert isinstance(next(auth.flow(issued.key, REQ)), Effect)  # not from a cache


class InterruptedStore(CountingStore):
    """Announces a change in the middle of a check: `APIKeyAuth` reads the hash key
    after it took the record from its cache and before it caches the verified key."""

    def __init__(self) -> None:
        super().__init__()
        self.interrupt: Callable[[], None] | None = None

    @property
    def hash_key(self) -> bytes:
        interrupt, self.interrupt = self.interrupt, None
        if interrupt is not None:
            interrupt()
        return super().hash_key


def test_a_check_that_raced_an_invalidation_leaves_no_hit(clock: Clock) -> None:
    store = InterruptedStore()
    auth = APIKeyAuth(store, cache_ttl=TTL, clock=clock)
    issued = store.create("k")
    check(auth, issued.key)
    auth._hits.pop(issued.key)  # the record stays cached, the verified key does not
    store.interrupt = lambda: auth.invalidate(issued.record.key_id)
    check(auth, issued.key)  # answered from the record read before the change ...
    assert store.interrupt is None
    assert auth.cached(issued.key) is None  # ... but not kept


def test_revocation_scheduled_in_the_future_bounds_the_cache(
    store: CountingStore, auth: APIKeyAuth, clock: Clock
) -> None:
    issued = store.create("k")
    # A record whose revocation is already scheduled (e.g. written by another process).
    store._update(
        issued.record.key_id,
        lambda r: type(r)(**{**_fields(r), "revoked_at": clock.now + 5}),
    )
    check(auth, issued.key)
    clock.advance(4.9)
    check(auth, issued.key)
    clock.advance(0.1)
    assert rejects(auth, issued.key).reason == "revoked"


def _fields(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}


def test_expiry_bounds_the_cache(store: CountingStore, auth: APIKeyAuth, clock: Clock) -> None:
    issued = store.create("k", expires_at=clock.now + 30)  # shorter than cache_ttl
    check(auth, issued.key)
    clock.advance(29.9)
    assert auth.cached(issued.key) is not None
    clock.advance(0.1)
    assert auth.cached(issued.key) is None
    assert rejects(auth, issued.key).reason == "expired"
    assert len(store.calls) == 1  # the record cache knew the expiry: no lookup needed


def test_rotation(store: CountingStore, auth: APIKeyAuth, clock: Clock) -> None:
    old = store.create("k", scopes=["read"])
    key_id = old.record.key_id
    assert check(auth, old.key).key_id == key_id
    clock.advance(1)
    new = store.rotate(key_id, grace=300)
    assert new is not None
    assert new.key != old.key
    assert parse(new.key)[1] == key_id  # same id, new secret
    # The new key works at once, even though this authenticator cached the old record.
    assert check(auth, new.key).scopes == frozenset({"read"})
    # The old one keeps working during the grace period ...
    clock.advance(200)
    assert check(auth, old.key).key_id == key_id
    # ... and fails once it is over.
    clock.advance(100)
    assert rejects(auth, old.key).reason == "rotated_secret"
    assert check(auth, new.key).key_id == key_id


def test_rotation_grace_shorter_than_cache_ttl(
    store: CountingStore, auth: APIKeyAuth, clock: Clock
) -> None:
    old = store.create("k")
    new = store.rotate(old.record.key_id, grace=5)
    assert new is not None
    assert check(auth, old.key).key_id == old.record.key_id
    clock.advance(4.9)
    assert auth.cached(old.key) is not None
    clock.advance(0.1)
    # The grace end bounds the cached result, not only cache_ttl.
    assert auth.cached(old.key) is None
    assert rejects(auth, old.key).reason == "rotated_secret"
    check(auth, new.key)


def test_rotation_without_grace(store: CountingStore, auth: APIKeyAuth) -> None:
    old = store.create("k")
    new = store.rotate(old.record.key_id, grace=0)
    assert new is not None
    assert rejects(auth, old.key).reason == "wrong_secret"
    check(auth, new.key)


def test_rotating_a_revoked_key_is_refused(store: CountingStore) -> None:
    issued = store.create("k")
    store.revoke(issued.record.key_id)
    with pytest.raises(ValueError, match="revoked"):
        store.rotate(issued.record.key_id)
    assert store.rotate("unknown00000") is None


def test_wrong_secret_for_a_cached_id(store: CountingStore, auth: APIKeyAuth, clock: Clock) -> None:
    issued = store.create("k")
    prefix, key_id, _ = parse(issued.key)
    check(auth, issued.key)
    for _ in range(20):
        err = rejects(auth, assemble(prefix, key_id, new_secret()))
        assert err.reason == "wrong_secret"
        assert err.status == 401
    check(auth, issued.key)  # the good key is untouched by the failures
    # Wrong secrets for a known id re-check the store (a rotation may have happened), but
    # at most once a second: guessing cannot turn into a flood of lookups.
    assert len(store.calls) == 1
    for _ in range(5):
        clock.advance(1)
        for _ in range(20):
            rejects(auth, assemble(prefix, key_id, new_secret()))
    assert len(store.calls) == 1 + 5


def test_new_key_right_after_rotation_elsewhere(
    store: CountingStore, auth: APIKeyAuth, clock: Clock
) -> None:
    # Another process rotates the key while this one has the old record cached.
    old = store.create("k")
    check(auth, old.key)
    clock.advance(1)
    new = store.rotate(old.record.key_id, grace=600)
    assert new is not None
    assert check(auth, new.key).key_id == old.record.key_id
    assert len(store.calls) == 2
    # The old key, still in its grace period, is checked against the refreshed record.
    assert check(auth, old.key).key_id == old.record.key_id
    assert len(store.calls) == 2


def test_key_deleted_from_store_is_unknown_on_recheck(
    store: CountingStore, auth: APIKeyAuth, clock: Clock
) -> None:
    issued = store.create("k")
    prefix, key_id, _ = parse(issued.key)
    check(auth, issued.key)
    del store._records[key_id]
    clock.advance(1)
    assert rejects(auth, assemble(prefix, key_id, new_secret())).reason == "unknown_key"


# -- negative cache -----------------------------------------------------------------------


def test_unknown_id_is_looked_up_once(store: CountingStore, auth: APIKeyAuth, clock: Clock) -> None:
    foreign = MemoryKeyStore().create("elsewhere").key
    for _ in range(5):
        assert rejects(auth, foreign).reason == "unknown_key"
    assert len(store.calls) == 1
    # Other secrets under the same unknown id hit the same entry.
    prefix, key_id, _ = parse(foreign)
    assert rejects(auth, assemble(prefix, key_id, new_secret())).reason == "unknown_key"
    assert len(store.calls) == 1
    clock.advance(10)  # negative_ttl
    rejects(auth, foreign)
    assert len(store.calls) == 2


def test_key_added_after_negative_caching_works_after_negative_ttl(
    store: CountingStore, auth: APIKeyAuth, clock: Clock
) -> None:
    plaintext = assemble("agk", new_key_id(), new_secret())
    assert rejects(auth, plaintext).reason == "unknown_key"
    store.add(plaintext, "configured")
    clock.advance(10)
    assert check(auth, plaintext).name == "configured"


def test_garbage_costs_no_lookup(store: CountingStore, auth: APIKeyAuth) -> None:
    for text in ["", "agk_", "agk_" + "A" * BODY_LEN, "x" * 500, "Bearer abc"]:
        assert isinstance(rejects(auth, text), InvalidToken)
    assert store.calls == []


# -- bounds -------------------------------------------------------------------------------


def test_hit_cache_is_bounded(store: CountingStore, clock: Clock) -> None:
    auth = APIKeyAuth(store, max_cache_entries=8, clock=clock)
    keys = [store.create(f"k{i}").key for i in range(50)]
    for key in keys:
        check(auth, key)
        assert len(auth._hits) <= 8
        assert len(auth._records) <= 8
    # The most recent key is still a pure cache hit.
    calls = len(store.calls)
    check(auth, keys[-1])
    assert len(store.calls) == calls
    # An evicted one is looked up again, and works.
    assert check(auth, keys[0]).name == "k0"
    assert len(store.calls) == calls + 1


def test_negative_cache_is_bounded(store: CountingStore, clock: Clock) -> None:
    auth = APIKeyAuth(store, max_cache_entries=8, clock=clock)
    good = store.create("good").key
    check(auth, good)
    for _ in range(100):
        rejects(auth, assemble("agk", new_key_id(), new_secret()))
        assert len(auth._unknown) <= 8
    # Floods of unknown ids do not evict verified keys.
    calls = len(store.calls)
    check(auth, good)
    assert len(store.calls) == calls


def test_wrong_secrets_do_not_grow_the_hit_cache(store: CountingStore, auth: APIKeyAuth) -> None:
    issued = store.create("k")
    prefix, key_id, _ = parse(issued.key)
    for _ in range(100):
        rejects(auth, assemble(prefix, key_id, new_secret()))
    assert len(auth._hits) == 0
    check(auth, issued.key)
    assert len(auth._hits) == 1


# -- single flight through the drivers ----------------------------------------------------


class SlowStore(CountingStore):
    """A store whose async lookup waits until every concurrent request has asked."""

    gate: asyncio.Event

    async def aget(self, key_id: str) -> KeyRecord | None:
        await self.gate.wait()
        return self.get(key_id)


def test_concurrent_first_requests_cause_one_lookup(clock: Clock) -> None:
    store = SlowStore()
    auth = APIKeyAuth(store, clock=clock)
    key = store.create("k").key
    driver = AsyncDriver()

    async def main() -> list[Identity]:
        store.gate = asyncio.Event()
        tasks = [asyncio.create_task(driver.run(auth.flow(key, REQ))) for _ in range(50)]
        await asyncio.sleep(0)  # one turn: every task has asked, none has an answer
        store.gate.set()
        return await asyncio.gather(*tasks)

    identities = asyncio.run(main())
    assert {i.name for i in identities} == {"k"}
    assert len(store.calls) == 1


# -- the store failing --------------------------------------------------------------------


def test_store_error_is_service_unavailable(clock: Clock) -> None:
    store = FailingStore(OSError("disk on fire"))
    auth = APIKeyAuth(store, clock=clock)
    key = store.create("k").key
    err = rejects(auth, key)
    assert isinstance(err, ServiceUnavailable)
    assert err.status == 503
    assert err.reason == "key_store_unavailable"
    assert err.context == {"key_id": parse(key)[1], "error": "OSError"}
    # Not remembered as unknown: the next request asks again.
    rejects(auth, key)
    assert store.calls == 2


def test_store_recovers(clock: Clock) -> None:
    store = FailingStore()
    auth = APIKeyAuth(store, clock=clock)
    issued = store.create("k")
    assert rejects(auth, issued.key).status == 503
    store.get = lambda key_id: MemoryKeyStore.get(store, key_id)  # type: ignore[method-assign]
    assert check(auth, issued.key).key_id == issued.record.key_id


def test_key_alphabet_is_base62() -> None:
    assert string.digits + string.ascii_uppercase + string.ascii_lowercase == ALPHABET

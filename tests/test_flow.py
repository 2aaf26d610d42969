"""The sync and async flow drivers: single flight, failures, time-outs, event loops, and
flows always closed. No sleeps: threads and tasks are released by events."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

import pytest

from asgi_auth.errors import AuthError, InvalidToken, ServiceUnavailable
from asgi_auth.flow import BUSY, AsyncDriver, Effect, EffectFailed, Flow, SyncDriver

WAIT = 30.0  # a safety net for a broken driver; never reached when it works


@dataclass
class Probe:
    """Records what flows saw and whether their `finally` ran."""

    started: int = 0
    closed: int = 0
    seen: list[Any] = field(default_factory=list)

    def flow(
        self,
        effect: Effect | None,
        *,
        catch: bool = False,
        before: Callable[[], None] | None = None,
    ) -> Flow[Any]:
        self.started += 1
        try:
            if before is not None:
                before()
            if effect is None:
                return "no-io"
            try:
                result = yield effect
            except EffectFailed as exc:
                self.seen.append(exc)
                if not catch:
                    raise
                return "fallback"
            self.seen.append(result)
            return result
        finally:
            self.closed += 1


def effect(
    key: Hashable = "k",
    *,
    sync: Callable[[], Any] = lambda: "value",
    async_: Callable[[], Any] | None = None,
    timeout: float = WAIT,
    join: bool = True,
) -> Effect:
    async def default_async() -> Any:
        return sync()

    return Effect(key=key, sync=sync, async_=async_ or default_async, timeout=timeout, join=join)


class CountingLock:
    """Stands in for the sync driver's lock, to know when every thread has registered
    with the flight (without sleeping)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entered = 0
        self.cond = threading.Condition()

    def __enter__(self) -> None:
        self._lock.acquire()
        with self.cond:
            self.entered += 1
            self.cond.notify_all()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def wait_for(self, n: int) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.entered >= n, WAIT)


# -- sync driver --------------------------------------------------------------------------


class Threads:
    """Start n threads on `target`; `join()` waits for them and keeps what they returned."""

    def __init__(self, n: int, target: Callable[[], Any]) -> None:
        self.results: list[Any] = []
        self.errors: list[BaseException] = []

        def work() -> None:
            try:
                self.results.append(target())
            except BaseException as exc:
                self.errors.append(exc)

        self._threads = [threading.Thread(target=work) for _ in range(n)]
        for t in self._threads:
            t.start()

    def join(self) -> None:
        for t in self._threads:
            t.join(WAIT)
            assert not t.is_alive()


def test_sync_single_flight_20_threads_one_call() -> None:
    driver = SyncDriver()
    lock = CountingLock()
    driver._lock = lock  # type: ignore[assignment]
    release = threading.Event()
    calls: list[int] = []

    def lookup() -> str:
        calls.append(1)
        assert release.wait(WAIT)
        return "record"

    probe = Probe()
    threads = Threads(20, lambda: driver.run(probe.flow(effect(sync=lookup))))
    lock.wait_for(20)  # every thread has joined the flight (the leader is blocked in lookup)
    release.set()
    threads.join()
    assert threads.errors == []
    assert threads.results == ["record"] * 20
    assert len(calls) == 1
    assert probe.closed == 20
    # Nothing is remembered: the next check asks again.
    assert driver.run(probe.flow(effect(sync=lookup))) == "record"
    assert len(calls) == 2


def test_sync_single_flight_shares_a_failure() -> None:
    driver = SyncDriver()
    lock = CountingLock()
    driver._lock = lock  # type: ignore[assignment]
    release = threading.Event()
    calls: list[int] = []

    def lookup() -> str:
        calls.append(1)
        assert release.wait(WAIT)
        raise ConnectionError("store down")

    probe = Probe()
    threads = Threads(20, lambda: driver.run(probe.flow(effect(sync=lookup))))
    lock.wait_for(20)
    release.set()
    threads.join()
    assert threads.results == []
    assert len(threads.errors) == 20
    assert len(calls) == 1
    for err in threads.errors:
        assert isinstance(err, EffectFailed)
        assert isinstance(err, ServiceUnavailable)
        assert err.status == 503
        assert isinstance(err.cause, ConnectionError)
    assert probe.closed == 20


def test_sync_different_keys_do_not_share() -> None:
    driver = SyncDriver()
    calls: list[str] = []

    def lookup(key: str) -> Callable[[], str]:
        return lambda: calls.append(key) or key

    probe = Probe()
    assert driver.run(probe.flow(effect("a", sync=lookup("a")))) == "a"
    assert driver.run(probe.flow(effect("b", sync=lookup("b")))) == "b"
    assert calls == ["a", "b"]


def test_sync_follower_time_out_is_effect_failed() -> None:
    driver = SyncDriver()
    lock = CountingLock()
    driver._lock = lock  # type: ignore[assignment]
    release = threading.Event()
    probe = Probe()

    def slow() -> str:
        assert release.wait(WAIT)
        return "late"

    leader = Threads(1, lambda: driver.run(probe.flow(effect(sync=slow))))
    lock.wait_for(1)
    # A follower bounded by its effect's time-out gives up: EffectFailed, i.e. a 503.
    with pytest.raises(EffectFailed) as info:
        driver.run(probe.flow(effect(sync=slow, timeout=0.01)))
    assert isinstance(info.value.cause, TimeoutError)
    release.set()
    leader.join()
    assert leader.results == ["late"]  # the leader is not disturbed by a follower giving up
    assert leader.errors == []
    assert probe.closed == 2


def test_sync_busy_when_not_joining() -> None:
    driver = SyncDriver()
    lock = CountingLock()
    driver._lock = lock  # type: ignore[assignment]
    release = threading.Event()

    def slow() -> str:
        assert release.wait(WAIT)
        return "fresh"

    probe = Probe()
    leader = Threads(1, lambda: driver.run(probe.flow(effect(sync=slow))))
    lock.wait_for(1)
    # Optional work (a refresh ahead of expiry) does not wait for one in flight.
    assert driver.run(probe.flow(effect(sync=slow, join=False))) is BUSY
    release.set()
    leader.join()
    assert leader.results == ["fresh"]


def test_sync_keyboard_interrupt_is_not_a_503() -> None:
    def interrupted() -> str:
        raise KeyboardInterrupt

    probe = Probe()
    with pytest.raises(KeyboardInterrupt):
        SyncDriver().run(probe.flow(effect(sync=interrupted)))
    assert probe.closed == 1


# -- async driver -------------------------------------------------------------------------


def test_async_single_flight_50_tasks_one_call() -> None:
    driver = AsyncDriver()
    probe = Probe()
    calls: list[int] = []

    async def main() -> list[Any]:
        gate = asyncio.Event()

        async def lookup() -> str:
            calls.append(1)
            await gate.wait()
            return "record"

        n = 50
        arrived = 0

        def arrive() -> None:
            nonlocal arrived
            arrived += 1
            if arrived == n:
                gate.set()

        async def one() -> Any:
            return await driver.run(probe.flow(effect(async_=lookup), before=arrive))

        return await asyncio.gather(*(one() for _ in range(n)))

    assert asyncio.run(main()) == ["record"] * 50
    assert len(calls) == 1
    assert probe.closed == 50
    assert driver._flights == {}


def test_async_single_flight_shares_a_failure() -> None:
    driver = AsyncDriver()
    probe = Probe()
    calls: list[int] = []

    async def main() -> list[Any]:
        gate = asyncio.Event()

        async def lookup() -> str:
            calls.append(1)
            await gate.wait()
            raise ConnectionError("store down")

        n = 50
        arrived = 0

        def arrive() -> None:
            nonlocal arrived
            arrived += 1
            if arrived == n:
                gate.set()

        async def one() -> Any:
            return await driver.run(probe.flow(effect(async_=lookup), before=arrive))

        return await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)

    errors = asyncio.run(main())
    assert len(calls) == 1
    assert len(errors) == 50
    for err in errors:
        assert isinstance(err, EffectFailed)
        assert err.status == 503
        assert isinstance(err.cause, ConnectionError)
    assert probe.closed == 50


@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize(
    "error", [ConnectionError("refused"), OSError("disk"), ValueError("garbage"), TimeoutError()]
)
def test_effect_error_reaches_the_flow_as_effect_failed(kind: str, error: Exception) -> None:
    def failing() -> Any:
        raise error

    probe = Probe()
    flow = probe.flow(effect(sync=failing), catch=True)
    driver_run = SyncDriver().run if kind == "sync" else _arun
    assert driver_run(flow) == "fallback"  # e.g. stale-if-error
    (seen,) = probe.seen
    assert isinstance(seen, EffectFailed)
    assert isinstance(seen, ServiceUnavailable)
    assert seen.cause is error
    assert seen.status == 503
    assert seen.context == {"error": type(error).__name__}
    # Not caught by the flow: it surfaces as the 503 itself.
    with pytest.raises(EffectFailed) as info:
        driver_run(probe.flow(effect(sync=failing)))
    assert info.value.cause is error
    assert probe.closed == 2


def _arun(flow: Flow[Any]) -> Any:
    return asyncio.run(AsyncDriver().run(flow))


def test_async_effect_exceeding_its_timeout_is_effect_failed() -> None:
    probe = Probe()

    async def main() -> Any:
        never = asyncio.Event()

        async def hang() -> str:
            await never.wait()
            return "never"

        return await AsyncDriver().run(probe.flow(effect(async_=hang, timeout=0.01)))

    with pytest.raises(EffectFailed) as info:
        asyncio.run(main())
    assert isinstance(info.value.cause, TimeoutError)
    assert info.value.status == 503
    assert probe.closed == 1


def test_async_follower_timeout_leaves_the_leader_alone() -> None:
    driver = AsyncDriver()
    probe = Probe()

    async def main() -> tuple[Any, Any]:
        gate = asyncio.Event()
        started = asyncio.Event()

        async def slow() -> str:
            started.set()
            await gate.wait()
            return "record"

        leader = asyncio.create_task(driver.run(probe.flow(effect(async_=slow))))
        await started.wait()
        follower = driver.run(probe.flow(effect(async_=slow, timeout=0.01)))
        with pytest.raises(EffectFailed) as info:
            await follower
        gate.set()
        return await leader, info.value

    result, failure = asyncio.run(main())
    assert result == "record"
    assert isinstance(failure.cause, TimeoutError)
    assert probe.closed == 2
    assert driver._flights == {}


def test_async_busy_when_not_joining() -> None:
    driver = AsyncDriver()
    probe = Probe()

    async def main() -> tuple[Any, Any]:
        gate = asyncio.Event()
        started = asyncio.Event()

        async def slow() -> str:
            started.set()
            await gate.wait()
            return "fresh"

        leader = asyncio.create_task(driver.run(probe.flow(effect(async_=slow))))
        await started.wait()
        busy = await driver.run(probe.flow(effect(async_=slow, join=False)))
        gate.set()
        return busy, await leader

    assert asyncio.run(main()) == (BUSY, "fresh")


# -- event loops --------------------------------------------------------------------------


def test_async_driver_works_across_event_loops() -> None:
    driver = AsyncDriver()
    probe = Probe()
    calls: list[int] = []

    async def lookup() -> str:
        calls.append(1)
        await asyncio.sleep(0)
        return "record"

    async def burst() -> list[Any]:
        flows = [driver.run(probe.flow(effect(async_=lookup))) for _ in range(10)]
        return await asyncio.gather(*flows)

    for round_ in range(1, 4):  # as every test client starts its own loop
        assert asyncio.run(burst()) == ["record"] * 10
        assert driver._flights == {}  # nothing bound to the loop that just closed
        assert len(calls) == round_
    assert probe.closed == 30


def test_async_flight_interrupted_by_loop_shutdown() -> None:
    driver = AsyncDriver()
    probe = Probe()

    async def first_loop() -> None:
        started = asyncio.Event()

        async def hang() -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

        task = asyncio.create_task(driver.run(probe.flow(effect(async_=hang))))
        await started.wait()
        assert not task.done()
        # Returning ends the loop with the lookup still in flight: asyncio.run cancels it.

    asyncio.run(first_loop())
    assert driver._flights == {}
    assert probe.closed == 1

    async def second_loop() -> Any:
        async def lookup() -> str:
            return "record"

        return await driver.run(probe.flow(effect(async_=lookup)))

    assert asyncio.run(second_loop()) == "record"
    assert probe.closed == 2


def test_async_ignores_a_flight_from_a_dead_loop() -> None:
    driver = AsyncDriver()
    dead = asyncio.new_event_loop()
    driver._flights["k"] = dead.create_future()  # as if left behind by a closed loop
    dead.close()

    async def lookup() -> str:
        return "record"

    probe = Probe()
    assert asyncio.run(driver.run(probe.flow(effect(async_=lookup)))) == "record"


def test_async_driver_from_threads_with_own_loops() -> None:
    driver = AsyncDriver()
    probe = Probe()

    async def lookup() -> str:
        await asyncio.sleep(0)
        return "record"

    def in_own_loop() -> list[Any]:
        async def burst() -> list[Any]:
            return await asyncio.gather(
                *(driver.run(probe.flow(effect(async_=lookup))) for _ in range(5))
            )

        return asyncio.run(burst())

    threads = Threads(4, in_own_loop)
    threads.join()
    assert threads.errors == []
    assert threads.results == [["record"] * 5] * 4
    assert probe.closed == 20


# -- flows are always closed --------------------------------------------------------------


def _run(kind: str, flow: Flow[Any]) -> Any:
    return SyncDriver().run(flow) if kind == "sync" else _arun(flow)


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_flow_closed_on_the_hot_path(kind: str) -> None:
    probe = Probe()
    assert _run(kind, probe.flow(None)) == "no-io"
    assert probe.closed == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_flow_closed_after_effects(kind: str) -> None:
    closed: list[bool] = []

    def two_effects() -> Flow[str]:
        try:
            a = yield effect("a", sync=lambda: "1")
            b = yield effect("b", sync=lambda: "2")
            return a + b
        finally:
            closed.append(True)

    assert _run(kind, two_effects()) == "12"
    assert closed == [True]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_flow_closed_when_it_raises(kind: str) -> None:
    probe = Probe()

    def deny() -> None:
        raise InvalidToken("no", reason="test")

    with pytest.raises(AuthError):
        _run(kind, probe.flow(None, before=deny))
    assert probe.closed == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_flow_closed_when_its_effect_fails(kind: str) -> None:
    def failing() -> str:
        raise ConnectionError

    probe = Probe()
    with pytest.raises(EffectFailed):
        _run(kind, probe.flow(effect(sync=failing)))
    assert probe.closed == 1


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_flow_closed_when_abandoned_by_the_driver(kind: str) -> None:
    """A flow that yields again after catching its failure is still closed, its finally
    run, and the second effect's failure surfaces as the 503."""
    closed: list[bool] = []

    def stubborn() -> Flow[str]:
        try:
            with contextlib.suppress(EffectFailed):
                yield effect("a", sync=_raise)
            yield effect("b", sync=_raise)
            return "unreachable"
        finally:
            closed.append(True)

    with pytest.raises(EffectFailed):
        _run(kind, stubborn())
    assert closed == [True]


def _raise() -> str:
    raise ConnectionError


def test_flow_closed_when_the_task_is_cancelled() -> None:
    probe = Probe()

    async def main() -> None:
        started = asyncio.Event()

        async def hang() -> str:
            started.set()
            await asyncio.Event().wait()
            return "never"

        task = asyncio.create_task(AsyncDriver().run(probe.flow(effect(async_=hang))))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert probe.closed == 1
    assert probe.seen == []  # a cancellation is not turned into an EffectFailed


# -- start=False, settle hooks, a leader that goes away --------------------------------


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_effect_that_may_not_start_is_answered_no_flight(kind: str) -> None:
    from asgi_auth.flow import NO_FLIGHT

    calls: list[str] = []
    quiet = Effect(key="k", sync=lambda: calls.append("x"), async_=_never, start=False)
    probe = Probe()
    assert _run(kind, probe.flow(quiet)) is NO_FLIGHT
    assert calls == []


async def _never() -> Any:
    raise AssertionError("an effect that may not start was performed")


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_settle_hears_every_outcome_once_before_anyone_waiting(kind: str) -> None:
    heard: list[tuple[Any, Any]] = []

    def settle(result: Any, error: BaseException | None) -> None:
        heard.append((result, type(error).__name__ if error else None))

    ok = Effect(key="a", sync=lambda: "v", async_=_value, settle=settle)
    assert _run(kind, Probe().flow(ok)) == "v"
    bad = Effect(key="b", sync=_raise, async_=_araise, settle=settle)
    with pytest.raises(ServiceUnavailable):
        _run(kind, Probe().flow(bad))
    assert heard == [("v", None), (None, "ConnectionError")]


async def _value() -> str:
    return "v"


async def _araise() -> str:
    raise ConnectionError


def test_an_async_effect_raising_before_it_awaits_leaves_no_flight() -> None:
    # `async_` written as a plain function that fails at once (a closed pool, say): the
    # flight must still be settled and released, or every later call would wait it out.
    driver = AsyncDriver()

    def broken() -> Any:
        raise ConnectionError

    probe = Probe()
    for _ in range(3):
        with pytest.raises(ServiceUnavailable):
            asyncio.run(driver.run(probe.flow(effect(async_=broken))))
        assert driver._flights == {}


def test_a_cancelled_async_leader_leaves_its_call_to_those_waiting() -> None:
    # The leader's client goes away mid-call: the call runs on, its follower gets the
    # result, and the settle hook hears it although the leader's flow is closed.
    driver = AsyncDriver()
    heard: list[Any] = []

    async def main() -> Any:
        release = asyncio.Event()
        started = asyncio.Event()

        async def slow() -> str:
            started.set()
            await release.wait()
            return "answer"

        shared = Effect(
            key="k",
            sync=lambda: None,
            async_=slow,
            timeout=WAIT,
            settle=lambda r, e: heard.append(r),
        )
        leader_probe, follower_probe = Probe(), Probe()
        leader = asyncio.create_task(driver.run(leader_probe.flow(shared)))
        await started.wait()
        follower = asyncio.create_task(driver.run(follower_probe.flow(shared)))
        await asyncio.sleep(0)
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert leader_probe.closed == 1
        release.set()
        return await follower

    assert asyncio.run(main()) == "answer"
    assert heard == ["answer"]
    assert driver._flights == {}

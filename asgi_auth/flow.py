"""One verification core, two drivers.

An authenticator's slow path is a generator (httpx's `auth_flow` pattern): it yields an
`Effect` describing the I/O it needs and receives the result. `run_sync` (WSGI, threads)
and `run_async` (ASGI, any event loop) perform the I/O, merge concurrent identical
requests into one (single flight), bound it in time and always close the generator.
The generator itself never does I/O and never holds a lock across I/O, so each check
exists once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ServiceUnavailable

log = logging.getLogger("asgi_auth")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Effect:
    """A piece of I/O the core asks a driver to perform.

    `sync` is called by the sync driver, `async_` awaited by the async driver; both must
    return the same kind of value. Effects with equal `key` that overlap in time are
    performed once and share the result.
    """

    key: Hashable
    sync: Callable[[], Any] = field(repr=False)
    async_: Callable[[], Awaitable[Any]] = field(repr=False)
    timeout: float = 5.0
    #: False for optional work (a refresh ahead of expiry): when the same effect is
    #: already in flight, the driver answers `BUSY` at once instead of waiting for it.
    join: bool = True
    #: False to only join the same effect in flight: with none, the driver answers
    #: `NO_FLIGHT` at once instead of performing it (a wait that must not become a fetch).
    start: bool = True
    #: Called once by the driver that performed the effect, with `(result, None)` or
    #: `(None, error)`, before anyone waiting is told: state the I/O feeds (a key set) is
    #: updated even when the request that asked for it is gone. It must not raise.
    settle: Callable[[Any, BaseException | None], None] | None = field(default=None, repr=False)


class _Busy:
    def __repr__(self) -> str:
        return "BUSY"


BUSY: Any = _Busy()


class _NoFlight:
    def __repr__(self) -> str:
        return "NO_FLIGHT"


NO_FLIGHT: Any = _NoFlight()


class EffectFailed(ServiceUnavailable):
    """Thrown into a flow when its effect raised or timed out; `cause` is the original.

    A flow may catch it (to fall back on stale material); if it does not, it surfaces as
    a 503, never as a 500 and never as a 401.
    """

    def __init__(self, effect: Effect, cause: BaseException) -> None:
        super().__init__(reason="backend_error", context={"error": type(cause).__name__})
        self.effect = effect
        self.cause = cause


Flow = Generator[Effect, Any, T]


class _Flight:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class LeaderGone(Exception):
    """The call was abandoned before it answered (its thread was stopped, or its event
    loop is shutting down); those waiting on it try again."""


def _settle_effect(effect: Effect, result: Any, error: BaseException | None) -> None:
    if effect.settle is not None:
        try:
            effect.settle(result, error)
        except Exception:  # a bug, not a request's fault: the request carries on
            log.exception("an effect's settle hook failed")


Release = Callable[[], None]


class SyncDriver:
    """Runs flows in the calling thread; concurrent identical effects share one call.

    The leader of a shared call keeps it registered until its flow has taken the result
    in (merged keys, cached a record): a thread arriving in between gets that same
    result instead of starting a second call. The leader's own call is bounded by the
    effect's I/O (httpx2 time-outs, SQLite's busy time-out), not by a thread of ours.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}

    def _perform(self, effect: Effect, releases: list[Release]) -> Any:
        key = effect.key
        for _ in range(3):
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    if not effect.start:
                        return NO_FLIGHT
                    flight = self._flights[key] = _Flight()
            if leader:
                break
            if not flight.done.is_set():
                if not effect.join:
                    return BUSY
                if not flight.done.wait(effect.timeout):
                    raise TimeoutError("single-flight wait timed out")
            if isinstance(flight.error, LeaderGone):
                continue
            if flight.error is not None:
                raise flight.error
            return flight.result
        else:
            raise TimeoutError("single-flight leaders kept going away")

        def release() -> None:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]

        releases.append(release)
        try:
            flight.result = effect.sync()
        except Exception as exc:
            flight.error = exc
            _settle_effect(effect, None, exc)
            raise
        except BaseException:
            flight.error = LeaderGone()
            _settle_effect(effect, None, flight.error)
            release()
            raise
        else:
            _settle_effect(effect, flight.result, None)
        finally:
            flight.done.set()
        return flight.result

    def run(self, flow: Flow[T]) -> T:
        releases: list[Release] = []
        try:
            effect = next(flow)
            while True:
                try:
                    result = self._perform(effect, releases)
                except Exception as exc:
                    effect = flow.throw(EffectFailed(effect, exc))
                else:
                    effect = flow.send(result)
                _release(releases)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            _release(releases)
            flow.close()


def _release(releases: list[Release]) -> None:
    while releases:
        releases.pop()()


async def _call(effect: Effect) -> Any:
    try:  # `async_()` is called in here: one that raises at once still settles its flight
        result = await asyncio.wait_for(effect.async_(), effect.timeout)
    except Exception as exc:
        _settle_effect(effect, None, exc)
        raise
    except BaseException:
        _settle_effect(effect, None, LeaderGone())
        raise
    _settle_effect(effect, result, None)
    return result


def _settle(fut: asyncio.Future[Any], task: asyncio.Task[Any]) -> None:
    """Hand a shared call's outcome to its future."""
    if fut.done():
        return
    if task.cancelled():
        fut.set_exception(LeaderGone())  # the loop is shutting down: followers try again
    elif (exc := task.exception()) is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(task.result())
        return
    fut.exception()  # retrieved: there may be no one left to read it


class AsyncDriver:
    """Runs flows on the running event loop, whichever it is.

    In-flight futures are kept per key and reused only by callers on the same loop, so an
    authenticator keeps working when an app is later served from another loop (every test
    client starts its own) and nothing stays bound to a dead loop. As in `SyncDriver`, a
    finished call stays registered until its leader's flow has taken the result in. A
    cancelled leader (its client went away) cancels only itself: the call runs on as a
    task of its own, to its time-out at most, and its followers get its result.
    """

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}
        # The loop holds tasks weakly; a call whose leader is gone must not be collected.
        self._calls: set[asyncio.Task[Any]] = set()

    async def _perform(self, effect: Effect, releases: list[Release]) -> Any:
        loop = asyncio.get_running_loop()
        key = effect.key
        for _ in range(3):
            fut = self._flights.get(key)
            if fut is None or fut.get_loop() is not loop:
                break
            if not fut.done():
                if not effect.join:
                    return BUSY
                try:
                    return await asyncio.wait_for(asyncio.shield(fut), effect.timeout)
                except LeaderGone:
                    continue
            exc = fut.exception()
            if isinstance(exc, LeaderGone):
                continue
            if exc is not None:
                raise exc
            return fut.result()
        if not effect.start:
            return NO_FLIGHT
        fut = loop.create_future()
        self._flights[key] = fut

        def release() -> None:
            if self._flights.get(key) is fut:
                self._flights.pop(key, None)

        # The I/O is a task of its own: a leader that is cancelled (its client went away)
        # takes only itself away. The call goes on, bounded by its time-out, for those
        # waiting on it, and stays registered until done, so nobody starts it again.
        task = loop.create_task(_call(effect))
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        task.add_done_callback(functools.partial(_settle, fut))
        try:
            result = await asyncio.shield(fut)
        except Exception:
            releases.append(release)
            raise
        except BaseException:
            fut.add_done_callback(lambda _: release())
            raise
        releases.append(release)
        return result

    async def run(self, flow: Flow[T]) -> T:
        try:
            effect = next(flow)
        except StopIteration as stop:
            done: T = stop.value
            return done
        return await self.resume(flow, effect)

    async def resume(self, flow: Flow[T], effect: Effect) -> T:
        """Go on with a flow that has yielded `effect` (callers may run the first step
        themselves, which saves a coroutine when the flow needs no I/O at all)."""
        releases: list[Release] = []
        try:
            while True:
                try:
                    result = await self._perform(effect, releases)
                except Exception as exc:
                    effect = flow.throw(EffectFailed(effect, exc))
                else:
                    effect = flow.send(result)
                _release(releases)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            _release(releases)
            flow.close()

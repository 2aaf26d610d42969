"""One verification core, two drivers.

An authenticator's slow path is a generator (httpx's `auth_flow` pattern): it yields an
`Effect` describing the I/O it needs and receives the result. `run_sync` (WSGI, threads)
and `run_async` (ASGI, any event loop) perform the I/O, merge concurrent identical
requests into one (single flight), bound it in time and always close the generator.
The generator itself never does I/O and never takes a lock, so each check exists once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Generator, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .errors import ServiceUnavailable

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


class _Busy:
    def __repr__(self) -> str:
        return "BUSY"


BUSY: Any = _Busy()


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


class SyncDriver:
    """Runs flows in the calling thread; concurrent identical effects share one call."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}

    def _perform(self, effect: Effect) -> Any:
        with self._lock:
            flight = self._flights.get(effect.key)
            leader = flight is None
            if flight is None:
                flight = self._flights[effect.key] = _Flight()
        if not leader:
            if not effect.join:
                return BUSY
            if not flight.done.wait(effect.timeout):
                raise TimeoutError("single-flight wait timed out")
            if flight.error is not None:
                raise flight.error
            return flight.result
        try:
            flight.result = effect.sync()
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                del self._flights[effect.key]
            flight.done.set()
        return flight.result

    def run(self, flow: Flow[T]) -> T:
        try:
            effect = next(flow)
            while True:
                try:
                    result = self._perform(effect)
                except Exception as exc:
                    effect = flow.throw(EffectFailed(effect, exc))
                else:
                    effect = flow.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            flow.close()


class AsyncDriver:
    """Runs flows on the running event loop, whichever it is.

    In-flight futures are kept per key and reused only by callers on the same loop, so an
    authenticator keeps working when an app is later served from another loop (every test
    client starts its own) and nothing stays bound to a dead loop.
    """

    def __init__(self) -> None:
        self._flights: dict[Hashable, asyncio.Future[Any]] = {}

    async def _perform(self, effect: Effect) -> Any:
        loop = asyncio.get_running_loop()
        fut = self._flights.get(effect.key)
        if fut is not None and fut.get_loop() is loop and not fut.done():
            if not effect.join:
                return BUSY
            return await asyncio.wait_for(asyncio.shield(fut), effect.timeout)
        fut = loop.create_future()
        self._flights[effect.key] = fut
        try:
            result = await asyncio.wait_for(effect.async_(), effect.timeout)
        except BaseException as exc:
            # A cancelled leader (its client went away) must not cancel the followers.
            fut.set_exception(
                exc if isinstance(exc, Exception) else RuntimeError("lookup was cancelled")
            )
            # Mark retrieved: waiters may be absent, and an unread exception only warns.
            fut.exception()
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            if self._flights.get(effect.key) is fut:
                self._flights.pop(effect.key, None)

    async def run(self, flow: Flow[T]) -> T:
        try:
            effect = next(flow)
            while True:
                try:
                    result = await self._perform(effect)
                except Exception as exc:
                    effect = flow.throw(EffectFailed(effect, exc))
                else:
                    effect = flow.send(result)
        except StopIteration as stop:
            value: T = stop.value
            return value
        finally:
            flow.close()

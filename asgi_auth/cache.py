"""The hot-path cache: exact credential -> Identity, until a deadline.

A hit is one dict lookup, a clock read and two comparisons: no hashing, no locking, no
allocation. Only credentials that passed the full check get in, so an attacker cannot
grow it with junk; `max_entries` caps it anyway. A dict hit needs an equal 64-bit hash
(randomised per process) *and* an equal string, so it reveals nothing by timing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

from .identity import Identity


class Guard(Protocol):
    """What a cached result stands on (a signing key): once the clock reaches its `until`,
    the results it vouched for are void. A key that leaves its key set gets `-inf`; one
    missing from the issuer's answers gets the end of its grace, and `inf` back if it
    returns."""

    until: float


class _Always:
    __slots__ = ()
    until = float("inf")


ALWAYS: Guard = _Always()


class HitCache:
    __slots__ = ("_clock", "_hits", "_lock", "max_entries")

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be >= 1")
        self.max_entries = max_entries
        self._clock = clock
        self._hits: dict[str, tuple[Identity, float, Guard]] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._hits)

    def __contains__(self, token: str) -> bool:
        return token in self._hits

    def get(self, token: str) -> Identity | None:
        hit = self._hits.get(token)
        if hit is not None:
            now = self._clock()
            if hit[1] > now and hit[2].until > now:
                return hit[0]
        return None

    def put(self, token: str, identity: Identity, deadline: float, guard: Guard = ALWAYS) -> None:
        now = self._clock()
        if deadline <= now:
            return
        hits = self._hits
        if len(hits) < self.max_entries:
            hits[token] = (identity, deadline, guard)  # one atomic store: no lock needed
            return
        with self._lock:
            if len(hits) >= self.max_entries:
                # Drop dead entries first, else the older half: amortised O(1) per insert.
                # list() snapshots in one C call: inserts on other threads take no lock.
                entries = list(hits.items())
                dead = [t for t, (_, d, g) in entries if d <= now or g.until <= now]
                for t in dead or [t for t, _ in entries[: len(entries) // 2]]:
                    hits.pop(t, None)
            hits[token] = (identity, deadline, guard)

    def pop(self, token: str) -> None:
        """Forget one credential."""
        self._hits.pop(token, None)

    def discard(self, match: Callable[[Identity], bool] | None = None) -> None:
        """Forget every entry, or those whose identity `match`es."""
        with self._lock:
            if match is None:
                self._hits.clear()
            else:
                for t, (ident, _, _) in list(self._hits.items()):
                    if match(ident):
                        self._hits.pop(t, None)

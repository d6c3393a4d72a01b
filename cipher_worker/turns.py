"""Fair turns at a scarce resource shared by threads: the Argon2 runs of one process.

A web process may run only a few Argon2 hashes at once (each holds 64 MiB and a core for
≈ 0.2 s). A plain semaphore serves them first come, first served, so one client that sends
thirty requests at once makes everyone behind it wait for all thirty. Here every request
names who it is for (an account, a client address, …) and, when a turn frees, the waiter
goes first that is

1. urgent (someone waiting live on a page, such as an unlock), then
2. for names holding the fewest turns right now, then
3. for names served longest ago (a name never served beats every served one), then
4. the one that came first.

So a newcomer waits for at most the turns already running, however many requests another
client has queued. The scheduler is work-conserving: a client alone gets every turn.

A name may have only ``max_waiting`` requests that are not urgent waiting at once; more are
refused at once with :class:`Busy`, so that one client cannot tie up threads of a process
waiting here. Urgent requests are never refused for that: a whole family behind one home
address unlocks at once, and unlocks are bounded per address by their own allowance.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .errors import VeilError

BUSY = "too many hashes of these clients are waiting for a turn"


class Busy(VeilError):
    """Too many requests of one name are already waiting for a turn, or the wait ran out."""


@dataclass(order=True)
class _Waiter:
    rank: tuple[int, int, float, int]  # (0 urgent | 1, turns held, last served, arrival)
    names: tuple[str, ...] = field(compare=False)
    granted: bool = field(default=False, compare=False)


class FairTurns:
    """At most ``slots`` holders at once, handed out in the order of the module docstring."""

    def __init__(self, slots: int, *, max_waiting: int = 4) -> None:
        if slots < 1 or max_waiting < 1:
            raise ValueError("fair turns need at least one slot and one waiting place")
        self.slots = slots
        self.max_waiting = max_waiting
        self._lock = threading.Condition()
        self._free = slots
        self._waiters: list[_Waiter] = []
        self._holding: dict[str, int] = {}
        self._waiting: dict[str, int] = {}  # name → its requests waiting that are not urgent
        self._served: dict[str, float] = {}  # name → when it was last given a turn
        self._arrivals = itertools.count()

    @contextlib.contextmanager
    def turn(self, names: Sequence[str] = (), *, urgent: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Hold one turn for the duration of the block; Busy if not ``urgent`` and ``names``
        already have ``max_waiting`` requests waiting, or if no turn came within ``timeout`` seconds."""
        key = tuple(dict.fromkeys(names))  # each name once, in order
        self._acquire(key, urgent, timeout)
        try:
            yield
        finally:
            self._release(key)

    def _acquire(self, names: tuple[str, ...], urgent: bool, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            if self._free and not self._waiters:
                self._grant(names)
                return
            if not urgent and any(self._waiting.get(n, 0) >= self.max_waiting for n in names):
                raise Busy(BUSY)
            waiter = _Waiter((0, 0, 0.0, next(self._arrivals)), names)
            waiter.rank = self._rank(waiter, urgent)
            self._waiters.append(waiter)
            counted = () if urgent else names
            for n in counted:
                self._waiting[n] = self._waiting.get(n, 0) + 1
            try:
                while not waiter.granted:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise Busy(BUSY)
                    self._lock.wait(left)
            except BaseException:
                if waiter.granted:  # granted in the same instant it gave up: hand the turn on
                    self._release_locked(names)
                else:
                    self._waiters.remove(waiter)
                raise
            finally:
                for n in counted:
                    self._waiting[n] -= 1
                    if not self._waiting[n]:
                        del self._waiting[n]

    def _rank(self, waiter: _Waiter, urgent: bool) -> tuple[int, int, float, int]:
        holding = sum(self._holding.get(n, 0) for n in waiter.names)
        served = max((self._served.get(n, float("-inf")) for n in waiter.names), default=float("-inf"))
        return (0 if urgent else 1, holding, served, waiter.rank[3])

    def _grant(self, names: tuple[str, ...]) -> None:
        self._free -= 1
        now = time.monotonic()
        for n in names:
            self._holding[n] = self._holding.get(n, 0) + 1
            self._served[n] = now

    def _release(self, names: tuple[str, ...]) -> None:
        with self._lock:
            self._release_locked(names)

    def _release_locked(self, names: tuple[str, ...]) -> None:
        self._free += 1
        for n in names:
            self._holding[n] -= 1
            if not self._holding[n]:
                del self._holding[n]
        self._hand_on()

    def _hand_on(self) -> None:
        """Give the free turns to the best-ranked waiters (ranks change as turns are held)."""
        while self._free and self._waiters:
            for w in self._waiters:
                w.rank = self._rank(w, urgent=w.rank[0] == 0)
            best = min(self._waiters)
            self._waiters.remove(best)
            best.granted = True
            self._grant(best.names)
        if not self._waiters:
            self._forget_idle()
        self._lock.notify_all()

    def _forget_idle(self) -> None:
        # Last-served times matter only among waiters; with none waiting, idle names can go
        # (the table would otherwise grow by every address that ever hashed).
        self._served = {n: t for n, t in self._served.items() if n in self._holding}

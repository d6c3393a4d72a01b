"""Fair turns at a scarce resource shared by threads and coroutines: the Argon2 runs of one process.

A web process may run only a few Argon2 hashes at once (each holds 64 MiB and a core for
≈ 0.2 s). A plain semaphore serves them first come, first served, so one client that sends
thirty requests at once makes everyone behind it wait for all thirty. Here every request
names who it is for, from fine to coarse (a client address, its network, an album, an
account, …) and, when a turn frees, the waiter goes first

1. whose busiest name has the least *load*: the turns it holds now plus the turns it was
   given lately, each counting less as it ages (halving every :data:`HALF_LIFE` seconds),
   then
2. that is urgent (someone waiting live on a page, such as an unlock), then
3. that came first.

The busiest name decides, so a client cannot escape its load by spreading requests over
fresh names: thousands of IPv6 addresses of one network, or of one album, or of one account,
carry that network's, album's or account's load. Fairness comes before urgency: otherwise a
flood of unlocks (any account can unlock its own album, right password after right password)
would keep an owner's album creation waiting for as long as it lasts. So a newcomer waits
for the turns already running and for requests whose names are all as new as its own; the
scheduler is work-conserving: a client alone gets every turn.

Threads wait with :meth:`FairTurns.turn`; coroutines with :meth:`FairTurns.wait`, which holds
no thread while it waits (a thread pool in front of the turns would serve first come, first
served again).

A client (a request's *first* name: its address, or its account) may have only
``max_waiting`` requests that are not urgent waiting at once, and :data:`URGENT_WAITING`
urgent ones (a whole family behind one home address unlocks at once); more are refused at
once with :class:`Busy`, so that one client cannot tie up threads of a process, or make every
hand-over rank a long queue. Coarser names only rank, never refuse: a stranger filling a
network's or an album's places must not get the family refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .errors import VeilError

BUSY = "too many hashes of these clients are waiting for a turn"
HALF_LIFE = 60.0  # seconds over which a turn given counts half as much towards its names' load
URGENT_WAITING = 16  # urgent requests one name may have waiting
Rank = tuple[float, int, int]  # (load of the busiest name, 0 urgent | 1, arrival)


class Busy(VeilError):
    """Too many requests of one name are already waiting for a turn, or the wait ran out."""


@dataclass(order=True)
class _Waiter:
    rank: Rank
    names: tuple[str, ...] = field(compare=False)
    urgent: bool = field(compare=False)
    wake: Callable[[], None] | None = field(default=None, compare=False)  # a coroutine's; threads are notified
    granted: bool = field(default=False, compare=False)


class Ticket:
    """A turn held for ``names`` until :meth:`release` (once; later calls do nothing). A thread
    that :meth:`claim` s it becomes its only releaser: the waiter's own release then does
    nothing, so the turn stays taken until that thread's work is done."""

    def __init__(self, turns: FairTurns, names: tuple[str, ...]) -> None:
        self._turns, self.names, self.released, self.claimed = turns, names, False, False

    def claim(self) -> bool:
        """Take over the turn for work about to run; False if it was released or claimed already."""
        with self._turns._lock:
            if self.released or self.claimed:
                return False
            self.claimed = True
            return True

    def release(self, *, claimed: bool = False) -> None:
        """Give the turn back: ``claimed`` from the thread that claimed it, else only if none did."""
        with self._turns._lock:
            if not self.released and self.claimed == claimed:
                self.released = True
                self._turns._release_locked(self.names)


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
        self._waiting: dict[tuple[str, bool], int] = {}  # (client, urgent) → its requests waiting
        self._used: dict[str, tuple[float, float]] = {}  # name → (turns lately, when counted)
        self._arrivals = itertools.count()

    @contextlib.contextmanager
    def turn(self, names: Sequence[str] = (), *, urgent: bool = False, timeout: float | None = None) -> Iterator[None]:
        """Hold one turn for the duration of the block, waiting in this thread; Busy if not
        ``urgent`` and ``names`` already have ``max_waiting`` requests waiting, or if no turn
        came within ``timeout`` seconds."""
        key = tuple(dict.fromkeys(names))  # each name once, in order
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            waiter = self._queue(key, urgent, None)
            if waiter is not None:
                try:
                    while not waiter.granted:
                        left = None if deadline is None else deadline - time.monotonic()
                        if left is not None and left <= 0:
                            raise Busy(BUSY)
                        self._lock.wait(left)
                except BaseException:
                    self._give_up(waiter)
                    raise
        try:
            yield
        finally:
            with self._lock:
                self._release_locked(key)

    async def wait(self, names: Sequence[str] = (), *, urgent: bool = False, timeout: float | None = None) -> Ticket:
        """A turn for ``names``, waited for in the event loop (no thread held meanwhile); the
        caller must release the ticket. Busy as :meth:`turn`."""
        key = tuple(dict.fromkeys(names))
        loop = asyncio.get_running_loop()
        granted = loop.create_future()

        def settle() -> None:
            if not granted.done():
                granted.set_result(None)

        def wake() -> None:  # under the lock, maybe in another thread
            loop.call_soon_threadsafe(settle)

        with self._lock:
            waiter = self._queue(key, urgent, wake)
        if waiter is not None:
            try:
                async with asyncio.timeout(timeout):
                    await granted
            except TimeoutError:
                with self._lock:
                    if not waiter.granted:
                        self._give_up(waiter)
                        raise Busy(BUSY) from None
            except BaseException:  # cancelled: the page went away
                with self._lock:
                    self._give_up(waiter)
                raise
        return Ticket(self, key)

    # --- under the lock -------------------------------------------------------------------

    def _queue(self, names: tuple[str, ...], urgent: bool, wake: Callable[[], None] | None) -> _Waiter | None:
        """Grant a free turn at once (None), or queue a waiter."""
        if self._free and not self._waiters:
            self._grant(names)
            return None
        room = URGENT_WAITING if urgent else self.max_waiting
        client = (names[0] if names else "", urgent)
        if self._waiting.get(client, 0) >= room:
            raise Busy(BUSY)
        waiter = _Waiter((0.0, 0, next(self._arrivals)), names, urgent, wake)
        self._waiters.append(waiter)
        self._waiting[client] = self._waiting.get(client, 0) + 1
        return waiter

    def _give_up(self, waiter: _Waiter) -> None:
        """``waiter`` stops waiting: its turn, if one came in the same instant, goes on."""
        if waiter.granted:
            waiter.granted = False
            self._release_locked(waiter.names)
        elif waiter in self._waiters:
            self._waiters.remove(waiter)
            self._unqueue(waiter)

    def _unqueue(self, waiter: _Waiter) -> None:
        client = (waiter.names[0] if waiter.names else "", waiter.urgent)
        self._waiting[client] -= 1
        if not self._waiting[client]:
            del self._waiting[client]

    def _load(self, name: str, now: float) -> float:
        lately, when = self._used.get(name, (0.0, now))
        return self._holding.get(name, 0) + lately * 0.5 ** ((now - when) / HALF_LIFE)

    def _rank(self, waiter: _Waiter, now: float) -> Rank:
        load = max((self._load(n, now) for n in waiter.names), default=0.0)
        return (load, 0 if waiter.urgent else 1, waiter.rank[2])

    def _grant(self, names: tuple[str, ...]) -> None:
        self._free -= 1
        now = time.monotonic()
        for n in names:
            self._holding[n] = self._holding.get(n, 0) + 1
            lately, when = self._used.get(n, (0.0, now))
            self._used[n] = (lately * 0.5 ** ((now - when) / HALF_LIFE) + 1.0, now)

    def _release_locked(self, names: tuple[str, ...]) -> None:
        self._ungrant(names)
        self._hand_on()

    def _ungrant(self, names: tuple[str, ...]) -> None:
        self._free += 1
        for n in names:
            self._holding[n] -= 1
            if not self._holding[n]:
                del self._holding[n]

    def _hand_on(self) -> None:
        """Give the free turns to the best-ranked waiters (ranks change as turns are held)."""
        while self._free and self._waiters:
            now = time.monotonic()
            for w in self._waiters:
                w.rank = self._rank(w, now)
            best = min(self._waiters)
            self._waiters.remove(best)
            self._unqueue(best)
            best.granted = True
            self._grant(best.names)
            if best.wake is not None:
                try:
                    best.wake()
                except RuntimeError:  # its event loop has closed: nobody is left to use the turn
                    best.granted = False
                    self._ungrant(best.names)
        if not self._waiters:
            self._forget_idle()
        self._lock.notify_all()

    def _forget_idle(self) -> None:
        # Loads matter only among waiters; with none waiting, names that hold nothing can go
        # (the table would otherwise grow by every address that ever hashed).
        self._used = {n: u for n, u in self._used.items() if n in self._holding}

"""Fair turns (cipher_worker.turns): who gets the next free Argon2 turn when many wait."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

import pytest

from cipher_worker.turns import BUSY, Busy, FairTurns


class Queue:
    """Threads that each wait for a turn, hold it until told, and note the order they got it."""

    def __init__(self, turns: FairTurns) -> None:
        self.turns = turns
        self.order: list[str] = []
        self.errors: list[Exception] = []
        self._release: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []

    def ask(self, label: str, *names: str, urgent: bool = False, timeout: float | None = None) -> None:
        release = self._release[label] = threading.Event()
        waiting, refused = self._count_waiting(), len(self.errors)

        def run() -> None:
            try:
                with self.turns.turn(names, urgent=urgent, timeout=timeout):
                    self.order.append(label)
                    release.wait(10)
            except Busy as exc:
                self.errors.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self._threads.append(thread)
        _until(lambda: label in self.order or self._count_waiting() > waiting or len(self.errors) > refused)

    def _count_waiting(self) -> int:
        with self.turns._lock:
            return len(self.turns._waiters)

    def done(self, label: str) -> None:
        """Let ``label`` give its turn back and wait until the next holder has it."""
        before = len(self.order)
        self._release[label].set()
        _until(lambda: len(self.order) > before or not self.turns._waiters)

    def finish(self) -> None:
        for event in self._release.values():
            event.set()
        for thread in self._threads:
            thread.join(5)


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "the turns did not move"
        time.sleep(0.005)


def test_a_newcomer_waits_for_the_running_turn_only_not_for_another_clients_queue() -> None:
    queue = Queue(FairTurns(1, max_waiting=10))
    queue.ask("a1", "account:a")
    for i in range(2, 6):
        queue.ask(f"a{i}", "account:a")
    queue.ask("b1", "account:b")
    try:
        queue.done("a1")
        assert queue.order == ["a1", "b1"]  # not a2..a5 first, as a plain semaphore would
        queue.done("b1")
        assert queue.order == ["a1", "b1", "a2"]
    finally:
        queue.finish()


def test_clients_that_share_an_address_count_as_the_address_too() -> None:
    queue = Queue(FairTurns(1, max_waiting=10))
    queue.ask("x1", "account:x", "address:1.2.3.4")
    queue.ask("y1", "account:y", "address:1.2.3.4")  # a second account from the same address
    queue.ask("z1", "account:z", "address:5.6.7.8")
    try:
        queue.done("x1")
        assert queue.order == ["x1", "z1"]  # y's address was served a moment ago; z's never
    finally:
        queue.finish()


def test_urgent_turns_go_first_and_a_lone_client_gets_every_free_turn() -> None:
    queue = Queue(FairTurns(2, max_waiting=10))
    queue.ask("a1", "account:a")
    queue.ask("a2", "account:a")  # two free turns, one client: it takes both
    assert queue.order == ["a1", "a2"]
    queue.ask("b1", "account:b")
    queue.ask("u1", "address:9.9.9.9", urgent=True)
    try:
        queue.done("a1")
        assert queue.order == ["a1", "a2", "u1"]
        queue.done("a2")
        assert queue.order[-1] == "b1"
    finally:
        queue.finish()


def test_too_many_waiting_for_one_client_are_refused_at_once_and_others_still_queue() -> None:
    turns = FairTurns(1, max_waiting=2)
    queue = Queue(turns)
    queue.ask("a1", "account:a")
    queue.ask("a2", "account:a")
    queue.ask("a3", "account:a")
    try:
        with pytest.raises(Busy, match=BUSY), turns.turn(("account:a",)):
            pass
        queue.ask("b1", "account:b")  # someone else still gets a place
        assert not queue.errors
        queue.done("a1")
        assert queue.order == ["a1", "b1"]
    finally:
        queue.finish()


def test_a_wait_that_runs_out_leaves_the_turns_as_they_were() -> None:
    turns = FairTurns(1)
    queue = Queue(turns)
    queue.ask("a1", "account:a")
    queue.ask("b1", "account:b", timeout=0.05)
    _until(lambda: bool(queue.errors))
    queue.done("a1")
    try:
        with turns.turn(("account:b",), timeout=1):  # the slot came back, nobody is left waiting
            assert turns._free == 0
        assert turns._free == 1 and not turns._waiters and not turns._waiting and not turns._holding
    finally:
        queue.finish()


def test_urgent_requests_are_never_refused_as_busy_a_family_at_one_address_unlocks_together() -> None:
    queue = Queue(FairTurns(1, max_waiting=2))
    queue.ask("k1", "address:home")
    try:
        for i in range(6):  # six relatives behind one home router press "Show real faces"
            queue.ask(f"u{i}", "address:home", urgent=True)
        assert not queue.errors
        for label in ["k1", "u0", "u1", "u2", "u3", "u4"]:
            queue.done(label)
        assert queue.order == ["k1", "u0", "u1", "u2", "u3", "u4", "u5"]
    finally:
        queue.finish()


def test_a_flood_of_urgent_requests_does_not_starve_a_newcomer_that_is_not_urgent() -> None:
    """Review round 9: any account may unlock its own album over and over; an owner's album
    creation queued behind such a flood waited 60 s and was refused as busy."""
    queue = Queue(FairTurns(1, max_waiting=10))
    queue.ask("f0", "address:flood-0", urgent=True)
    for i in range(1, 6):
        queue.ask(f"f{i}", f"address:flood-{i % 2}", urgent=True)
    queue.ask("owner", "account:owner", "address:home")
    try:
        queue.done("f0")
        queue.done(queue.order[-1])
        assert "owner" in queue.order[:3]  # after one other flooding address at most, not after the flood
    finally:
        queue.finish()


def test_coroutines_wait_in_the_same_fair_order_without_a_thread_and_give_up_cleanly() -> None:
    turns = FairTurns(1, max_waiting=10)
    order: list[str] = []

    async def scenario() -> None:
        first = await turns.wait(("address:a",))  # free: granted at once
        waiting = [
            asyncio.create_task(_hold(turns, label, names, order))
            for label, names in [("a2", ("address:a",)), ("a3", ("address:a",)), ("b1", ("address:b",))]
        ]
        gone = asyncio.create_task(turns.wait(("address:c",)))
        late = asyncio.create_task(turns.wait(("address:d",), timeout=0.05))
        await asyncio.sleep(0.1)
        with pytest.raises(Busy):
            await late
        gone.cancel()  # the page went away while it waited
        with contextlib.suppress(asyncio.CancelledError):
            await gone
        assert threading.active_count() == threads_before
        first.release()
        first.release()  # a second release gives nothing back twice
        await asyncio.gather(*waiting)

    threads_before = threading.active_count()
    asyncio.run(scenario())
    assert order == ["b1", "a2", "a3"]
    assert turns._free == 1 and not turns._waiters and not turns._holding and not turns._waiting


async def _hold(turns: FairTurns, label: str, names: tuple[str, ...], order: list[str]) -> None:
    ticket = await turns.wait(names)
    order.append(label)
    await asyncio.sleep(0.01)
    ticket.release()


def test_a_flood_from_many_fresh_addresses_of_one_network_carries_the_networks_load() -> None:
    """Review round 10: each IPv6 /64 of one /48 was a name never served, so Grandma waited one
    turn per address queued before her (52 s, then busy)."""
    queue = Queue(FairTurns(1, max_waiting=10))
    queue.ask("x0", "address:x0", "net:2001:db8:77::/48", "album:theirs", urgent=True)
    for i in range(1, 9):
        queue.ask(f"x{i}", f"address:x{i}", "net:2001:db8:77::/48", "album:theirs", urgent=True)
    queue.ask("grandma", "address:grandma", "net:198.51.100.0/24", "album:family", urgent=True)
    try:
        queue.done("x0")
        assert queue.order == ["x0", "grandma"]
    finally:
        queue.finish()


def test_a_claimed_ticket_stays_taken_until_its_thread_is_done_whatever_the_waiter_does() -> None:
    turns = FairTurns(1)

    async def scenario() -> None:
        ticket = await turns.wait(("address:a",))
        assert ticket.claim() and not ticket.claim()  # one thread takes it over
        ticket.release()  # the waiter left (its wait for the thread was cancelled): not yet
        assert turns._free == 0
        ticket.release(claimed=True)  # the thread's hash is done
        assert turns._free == 1
        unclaimed = await turns.wait(("address:b",))
        unclaimed.release()
        assert not unclaimed.claim() and turns._free == 1  # too late to claim: the thread takes its own turn

    asyncio.run(scenario())


def test_a_waiter_whose_event_loop_has_closed_leaves_the_counts_right() -> None:
    turns = FairTurns(1)
    holder = Queue(turns)
    holder.ask("h", "address:h")
    loop = asyncio.new_event_loop()
    orphan = loop.create_task(turns.wait(("address:gone",)))
    loop.run_until_complete(asyncio.sleep(0.01))  # queued
    assert not orphan.done()
    loop.close()
    holder.done("h")  # the turn would go to the closed loop's waiter: it goes back instead
    assert turns._free == 1 and not turns._waiters and not turns._holding and not turns._waiting
    with turns.turn(("address:next",), timeout=1):
        assert turns._free == 0
    holder.finish()


def test_one_name_may_have_only_so_many_urgent_requests_waiting() -> None:
    from cipher_worker.turns import URGENT_WAITING

    turns = FairTurns(1)
    queue = Queue(turns)
    queue.ask("h", "address:other")
    try:
        for i in range(URGENT_WAITING):
            queue.ask(f"u{i}", "album:theirs", urgent=True)
        assert not queue.errors
        queue.ask("over", "album:theirs", urgent=True)
        assert len(queue.errors) == 1
    finally:
        queue.finish()


def test_coarse_names_rank_but_never_refuse_a_stranger_filling_a_network_leaves_the_family_its_place() -> None:
    """Review round 11: a link holder's wrong guesses filled the album's waiting places and
    Grandma was refused as busy, although the attacker was elsewhere."""
    from cipher_worker.turns import URGENT_WAITING

    queue = Queue(FairTurns(1))
    queue.ask("h", "address:other")
    try:
        for i in range(URGENT_WAITING + 4):
            queue.ask(f"x{i}", "address:x", "net:shared", urgent=True)
        assert len(queue.errors) == 4  # the attacking address has sixteen places
        queue.ask("grandma", "address:grandma", "net:shared", urgent=True)
        assert len(queue.errors) == 4
    finally:
        queue.finish()

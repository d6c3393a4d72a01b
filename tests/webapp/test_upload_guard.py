"""The ASGI guard in front of Django (webapp.limits.RequestBodyLimit): body size limits, the
in-flight budget and its fair share between accounts, and bodies that stall or trickle."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from webapp import limits
from webapp.limits import RequestBodyLimit

MB = limits.SMALL_BODY


def test_the_asgi_guard_refuses_a_large_body_before_django_sees_it() -> None:
    called: list[str] = []
    body = [{"type": "http.request", "body": b"x" * 101, "more_body": False}]

    async def django(scope: Any, receive: Any, send: Any) -> None:
        called.append(scope["path"])

    async def receive() -> dict[str, Any]:
        return body.pop()

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    guard = RequestBodyLimit(django, max_bytes=100, max_upload_mb=40, drain_bytes=1000)
    scope = {"type": "http", "path": "/albums/x/photos/", "headers": [(b"content-length", b"101")]}
    async_to_sync(guard)(scope, receive, send)

    assert called == [] and body == []  # read to the end, so the client can read the answer
    assert sent[0]["status"] == 413
    assert sent[1]["body"] == b"This photo is too large: Veil accepts photos up to 40 MB."

    sent.clear()
    body.append({"type": "http.request", "body": b"never read", "more_body": False})
    huge = {**scope, "headers": [(b"content-length", b"5000")]}
    async_to_sync(guard)(huge, receive, send)
    assert called == [] and len(body) == 1 and sent[0]["status"] == 413  # too big to drain


def test_photo_bodies_past_the_in_flight_budget_are_asked_to_come_back_and_nothing_is_held_after() -> None:
    import asyncio

    from webapp.limits import BUSY, SMALL_BODY

    size = SMALL_BODY * 2
    release = asyncio.Event()
    served: list[str] = []

    async def django(scope: Any, receive: Any, send: Any) -> None:
        if (await receive())["type"] == "http.disconnect":
            return  # as Django does: no answer to a request cut off
        if scope["path"] == "/first":
            await release.wait()  # Django still holds the first photo's body
        served.append(scope["path"])
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = RequestBodyLimit(django, max_bytes=10 * size, max_upload_mb=40, in_flight_bytes=int(1.5 * size))

    def request(path: str, length: int) -> tuple[dict[str, Any], Any, Any, list[dict[str, Any]]]:
        scope = {"type": "http", "path": path, "headers": [(b"content-length", str(length).encode())]}
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"x" * length, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        return scope, receive, send, sent

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]], int]:
        first = request("/first", size)
        held = asyncio.create_task(guard(*first[:3]))
        await asyncio.sleep(0.01)
        second, page = request("/second", size), request("/page", 1000)
        await guard(*second[:3])  # over budget while the first is held: come back in a moment
        await guard(*page[:3])  # a small body never waits
        release.set()
        await held
        third = request("/third", size)
        await guard(*third[:3])  # the first is answered: its bytes are free again
        return second[3], page[3], third[3], guard.in_flight

    second, page, third, left = async_to_sync(scenario)()

    assert second[0]["status"] == 429 and (b"retry-after", b"2") in second[0]["headers"]
    assert second[1]["body"].decode() == BUSY
    assert page[0]["status"] == third[0]["status"] == 201
    assert served == ["/page", "/first", "/third"] and left == 0


def test_the_asgi_guard_cuts_off_a_chunked_body_that_grows_too_large() -> None:
    chunks = [{"type": "http.request", "body": b"x" * 60, "more_body": True} for _ in range(3)]
    chunks[-1]["more_body"] = False
    seen: list[str] = []

    async def django(scope: Any, receive: Any, send: Any) -> None:
        while (message := await receive())["type"] != "http.disconnect":
            seen.append(message["type"])
        seen.append("disconnect")

    async def receive() -> dict[str, Any]:
        return chunks.pop(0)

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    guard = RequestBodyLimit(django, max_bytes=100, max_upload_mb=40)
    async_to_sync(guard)({"type": "http", "headers": [(b"accept", b"application/json")]}, receive, send)

    assert seen == ["http.request", "disconnect"] and chunks == []
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": "This photo is too large: Veil accepts photos up to 40 MB."}


def _asgi_call(guard: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: list[dict[str, Any]], client: str):
    """One request through ``guard`` (a coroutine to await) and the list its answer is sent to."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if not chunks:
            await asyncio.sleep(3600)  # a client that has stopped sending
        return chunks.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": path, "headers": headers, "client": (client, 50000)}
    return guard(scope, receive, send), sent


async def _answer_django(scope: Any, receive: Any, send: Any) -> None:
    while (message := await receive())["type"] == "http.request" and message.get("more_body"):
        pass
    if message["type"] == "http.disconnect":
        return
    await send({"type": "http.response.start", "status": 201, "headers": []})
    await send({"type": "http.response.body", "body": b""})


def test_only_photo_uploads_may_carry_large_bodies() -> None:
    from webapp.limits import NOT_HERE, SMALL_BODY, UPLOAD_PATHS

    guard = RequestBodyLimit(_answer_django, max_bytes=40 * SMALL_BODY, max_upload_mb=40, upload_paths=UPLOAD_PATHS)
    big = [(b"content-length", str(2 * SMALL_BODY).encode())]
    body = [{"type": "http.request", "body": b"x" * 2 * SMALL_BODY, "more_body": False}]

    async def send_one(path: str) -> list[dict[str, Any]]:
        call, sent = _asgi_call(guard, path, big, list(body), "198.51.100.1")
        await call
        return sent

    login = asyncio.run(send_one("/accounts/login/"))
    assert login[0]["status"] == 413 and login[1]["body"].decode() == NOT_HERE
    for path in ("/albums/0b5e/photos/", "/api/albums/0b5e/photos/"):
        assert asyncio.run(send_one(path))[0]["status"] == 201, path
    assert guard.in_flight == 0 and not guard.in_flight_by_client


def test_one_account_holds_at_most_half_the_budget_a_stalled_body_holds_nothing_and_is_let_go(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from webapp import limits

    monkeypatch.setattr(limits, "BODY_IDLE_SECONDS", 0.2)
    size = limits.SMALL_BODY
    release = asyncio.Event()

    async def django(scope: Any, receive: Any, send: Any) -> None:
        message = {"more_body": True}
        while message.get("more_body"):
            message = await receive()
            if message["type"] == "http.disconnect":
                return
        await release.wait()  # Django still holds the body
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guard = RequestBodyLimit(django, max_bytes=4 * size, max_upload_mb=4, in_flight_bytes=10 * size)
    declared = [(b"content-length", str(4 * size).encode())]

    def whole(n: int) -> list[dict[str, Any]]:
        return [{"type": "http.request", "body": b"x" * n * size}]

    async def scenario() -> tuple[list[dict[str, Any]], ...]:
        # a body that declares much and sends a byte holds a byte, and is let go when it stalls
        trickle, stalled = _asgi_call(
            guard, "/albums/a/photos/", declared, [{"type": "http.request", "body": b"x", "more_body": True}], "1.1.1.1"
        )
        first, held = _asgi_call(guard, "/albums/a/photos/", declared, whole(4), "198.51.100.7")
        tasks = [asyncio.create_task(trickle), asyncio.create_task(first)]
        await asyncio.sleep(0.05)
        assert guard.in_flight == 4 * size + 1
        again, refused = _asgi_call(guard, "/albums/a/photos/", declared, whole(2), "198.51.100.7")
        await again  # 4 + 2 > half of 10: this client waits …
        other, taken = _asgi_call(guard, "/albums/a/photos/", declared, whole(2), "203.0.113.5")
        other_task = asyncio.create_task(other)  # … while another gets in
        await asyncio.sleep(0.3)
        release.set()
        await asyncio.gather(*tasks, other_task)
        return stalled, held, refused, taken

    stalled, held, refused, taken = asyncio.run(scenario())
    assert refused[0]["status"] == 429 and held[0]["status"] == taken[0]["status"] == 201
    assert stalled[0]["status"] == 408 and stalled[1]["body"].decode() == limits.STALLED
    assert guard.in_flight == 0 and not guard.in_flight_by_client


def test_only_an_account_may_send_a_photo_body_and_its_bodies_share_half_the_budget() -> None:
    from webapp.limits import LOGGED_OUT, SMALL_BODY

    async def account(scope: Any) -> str | None:
        return dict(scope["headers"]).get(b"x-test-account", b"").decode() or None

    guard = RequestBodyLimit(
        _answer_django, max_bytes=4 * SMALL_BODY, max_upload_mb=4, in_flight_bytes=10 * SMALL_BODY, account=account
    )
    length = (b"content-length", str(2 * SMALL_BODY).encode())
    body = [{"type": "http.request", "body": b"x" * 2 * SMALL_BODY}]

    async def send_one(*headers: tuple[bytes, bytes]) -> list[dict[str, Any]]:
        call, sent = _asgi_call(guard, "/albums/a/photos/", [length, *headers], list(body), "198.51.100.9")
        await call
        return sent

    anonymous = asyncio.run(send_one())
    assert anonymous[0]["status"] == 403 and anonymous[1]["body"].decode() == LOGGED_OUT
    assert asyncio.run(send_one((b"x-test-account", b"7")))[0]["status"] == 201
    assert guard.in_flight == 0 and not guard.in_flight_by_client


def test_a_view_that_runs_long_after_its_body_is_not_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Django waits on receive() for a disconnect while its view runs: that wait has no clock."""
    from webapp import limits

    monkeypatch.setattr(limits, "BODY_IDLE_SECONDS", 0.1)

    async def slow_view(scope: Any, receive: Any, send: Any) -> None:
        await receive()  # the whole body
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):
                assert (await receive())["type"] != "http.disconnect", "no client went away"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    guard = RequestBodyLimit(slow_view, max_bytes=100, max_upload_mb=40)
    call, sent = _asgi_call(guard, "/albums/a/settings/", [], [{"type": "http.request", "body": b"x"}], "198.51.100.3")
    asyncio.run(call)
    assert sent[0]["status"] == 200 and sent[1]["body"] == b"done"


def _chunks(*sizes: int) -> list[dict[str, Any]]:
    """A body sent as chunks of these sizes, with more to come after the last (it then stalls)."""
    return [{"type": "http.request", "body": b"x" * n, "more_body": True} for n in sizes]


async def _account(scope: Any) -> str | None:
    return dict(scope["headers"]).get(b"x-test-account", b"").decode() or None


def _as(account: str, length: int) -> list[tuple[bytes, bytes]]:
    return [(b"content-length", str(length).encode()), (b"x-test-account", account.encode())]


def test_a_fast_start_does_not_buy_a_long_trickle(monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that sends megabytes at once and then a byte now and then is let go once its banked
    time (at most BODY_IDLE_SECONDS) runs out, not after the minutes its first burst would buy."""
    monkeypatch.setattr(limits, "BODY_IDLE_SECONDS", 0.3)
    guard = RequestBodyLimit(_answer_django, max_bytes=40 * MB, max_upload_mb=40, in_flight_bytes=80 * MB)
    body = _chunks(16 * MB)

    trickled = 0

    async def trickle() -> dict[str, Any]:
        nonlocal trickled
        if body:
            return body.pop(0)
        await asyncio.sleep(0.2)  # always inside the idle limit, far below the rate
        trickled += 1
        return {"type": "http.request", "body": b"x", "more_body": trickled < 15}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "path": "/albums/a/photos/", "headers": [(b"content-length", str(40 * MB).encode())]}
    began = time.monotonic()
    asyncio.run(guard(scope, trickle, send))
    assert sent[0]["status"] == 408 and time.monotonic() - began < 2.0
    assert guard.in_flight == 0 and not guard.in_flight_by_client


def test_accounts_that_fill_the_budget_make_room_for_an_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two accounts each hold half the budget with bodies they never finish; an owner's photo takes
    the place of one of them at once (that one hears 429 and sends again), the other is let go
    when its banked time runs out, and nothing stays held."""
    monkeypatch.setattr(limits, "BODY_IDLE_SECONDS", 1.0)
    guard = RequestBodyLimit(
        _answer_django, max_bytes=8 * MB, max_upload_mb=8, in_flight_bytes=10 * MB, account=_account
    )

    async def scenario() -> tuple[list[list[dict[str, Any]]], int, int]:
        calls = [
            _asgi_call(guard, "/albums/a/photos/", _as(name, 8 * MB), _chunks(*[MB] * 5), "198.51.100.1")
            for name in ("a1", "a2")
        ]
        holders = [asyncio.create_task(call) for call, _ in calls]
        await asyncio.sleep(0.05)
        assert guard.in_flight == 10 * MB
        full = guard.in_flight
        owner, answer = _asgi_call(
            guard,
            "/albums/o/photos/",
            _as("owner", 3 * MB),
            [{"type": "http.request", "body": b"x" * 3 * MB}],
            "203.0.113.9",
        )
        await owner
        freed = guard.in_flight  # the body let go holds nothing from the moment it is let go
        await asyncio.gather(*holders)  # it hears 429 once the rest of it is read and dropped
        return [answer, calls[0][1], calls[1][1]], freed, full

    (owner, first, second), freed, full = asyncio.run(scenario())
    assert full == 10 * MB and owner[0]["status"] == 201 and freed == 5 * MB
    assert sorted([first[0]["status"], second[0]["status"]]) == [408, 429]
    busy = first if first[0]["status"] == 429 else second
    assert (b"retry-after", b"2") in busy[0]["headers"] and busy[1]["body"].decode() == limits.BUSY
    assert guard.in_flight == 0 and not guard.in_flight_by_client


def test_an_account_cannot_make_room_from_itself_or_from_smaller_holders() -> None:
    guard = RequestBodyLimit(
        _answer_django, max_bytes=8 * MB, max_upload_mb=8, in_flight_bytes=10 * MB, account=_account
    )

    async def scenario() -> list[list[dict[str, Any]]]:
        small, small_sent = _asgi_call(guard, "/albums/a/photos/", _as("small", 8 * MB), _chunks(2 * MB), "192.0.2.1")
        big, big_sent = _asgi_call(guard, "/albums/a/photos/", _as("big", 8 * MB), _chunks(*[MB] * 5), "192.0.2.2")
        whole = [*_chunks(MB, MB), {"type": "http.request", "body": b"x" * MB, "more_body": False}]
        more, more_sent = _asgi_call(guard, "/albums/a/photos/", _as("big", 8 * MB), whole, "192.0.2.2")
        held = [asyncio.create_task(small), asyncio.create_task(big)]
        await asyncio.sleep(0.05)
        await more  # "big" already holds half: it waits, and neither its own body nor "small" is let go
        assert guard.in_flight == 7 * MB
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        return [small_sent, big_sent, more_sent]

    small, big, more = asyncio.run(scenario())
    assert small == big == [] and more[0]["status"] == 429
    assert guard.in_flight == 0 and not guard.in_flight_by_client

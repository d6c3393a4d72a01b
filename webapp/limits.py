"""Guards against one client exhausting the service: an ASGI guard that refuses request bodies
over the upload limit before Django buffers them (and any body over 1 MB except a photo
upload's), holds the bodies one web process takes in at once to a budget shared fairly between
accounts, and lets go of a body that stalls or trickles; and a message rate for websockets."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from webapp.addresses import scope_address

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


@dataclass(eq=False)
class _Body:
    """One upload body counted against the in-flight budget."""

    client: str  # "account:<id>", or the client address where no account is asked for
    held: int = 0  # bytes of it counted now
    evicted: bool = False  # let go to make room (or past its client's share): it hears 429
    waiting: asyncio.Timeout | None = None  # its wait for the next chunk, while it waits


def too_large_message(max_upload_mb: int) -> str:
    return f"This photo is too large: Veil accepts photos up to {max_upload_mb} MB."


# A refused body is read and thrown away up to this many bytes, so that the client, still
# sending, gets to read the 413 instead of a connection reset; beyond it the connection drops.
DRAIN_BYTES = 256 * 1024 * 1024
# Bodies smaller than this (pages, forms, the API's JSON) never wait for the in-flight budget.
SMALL_BODY = 1024 * 1024
BUSY = "Veil is taking in many photos at once; this one is sent again in a moment."
BUSY_RETRY_AFTER = 2
NOT_HERE = "This request is too large."
STALLED = "The upload stalled; please send it again."
LOGGED_OUT = "Your session has ended; please log in again."
BODY_IDLE_SECONDS = 30.0  # a body that sends nothing for this long is let go …
# … and so is one slower than this, in bytes a second: each byte buys 1/MIN_BODY_RATE s more time,
# but at most BODY_IDLE_SECONDS are banked, so a fast start does not pay for a long trickle
MIN_BODY_RATE = 64 * 1024
# The two places photos are posted: the album page and the API.
UPLOAD_PATHS = re.compile(r"^/(api/)?albums/[^/]+/photos/$")


class RequestBodyLimit:
    """Answers 413 to an HTTP request whose body exceeds ``max_bytes``; Django never sees it.

    A declared Content-Length over the limit is refused before Django starts; a chunked body is
    counted as it arrives and cut off (Django sees a disconnect) once it passes the limit. The
    rest of a refused body is discarded chunk by chunk as it arrives, never kept.
    """

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        max_upload_mb: int,
        drain_bytes: int = DRAIN_BYTES,
        in_flight_bytes: int | None = None,
        upload_paths: re.Pattern[str] | None = None,
        account: Callable[[Scope], Awaitable[str | None]] | None = None,
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_mb = max_upload_mb
        self.drain_bytes = drain_bytes
        # What has arrived of every upload body of SMALL_BODY or more (or chunked) counts against
        # this until its request is answered (Django holds it in memory that long), and one
        # account's bodies against half of it. A body that would pass the budget takes the place
        # of a body still arriving from the account that holds the most, if that account would
        # still hold more than this one's: so whoever holds least always gets in, and accounts
        # that fill the budget cannot lock out an owner sending a photo. A body that finds no
        # room is answered 429 with Retry-After, which the album page waits out by itself. A body
        # alone always gets through.
        self.in_flight_bytes = in_flight_bytes
        self.in_flight = 0
        self.in_flight_by_client: dict[str, int] = {}
        self._arriving: list[_Body] = []  # the counted bodies not yet complete: the ones room can be made from
        # Only these paths take bodies over SMALL_BODY (None: every path does) …
        self.upload_paths = upload_paths
        # … and only from a logged-in account (its id, from the session or API token; None: any
        # client), whose bodies together count against half the budget.
        self.account = account

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        upload = self.upload_paths is None or bool(self.upload_paths.match(scope.get("path", "")))
        limit = self.max_bytes if upload else SMALL_BODY
        if declared is not None and declared > limit:
            if declared <= self.drain_bytes:
                await _drain(receive)
            await self._refuse(scope, send, upload)
            return
        counted = upload and bool(self.in_flight_bytes) and (declared is None or declared >= SMALL_BODY)
        client = scope_address(scope)
        if counted and self.account is not None:
            account = await self.account(scope)
            if account is None:  # nobody may hold upload memory without an account, not even briefly
                await _drain(receive, SMALL_BODY)
                await _answer(scope, send, 403, LOGGED_OUT, [(b"connection", b"close")])
                return
            client = "account:" + account
        await self._guarded(scope, receive, send, limit, upload, _Body(client) if counted else None)

    def _hold(self, body: _Body, amount: int) -> None:
        body.held += amount
        self.in_flight += amount
        left = self.in_flight_by_client.get(body.client, 0) + amount
        if left > 0:
            self.in_flight_by_client[body.client] = left
        else:
            self.in_flight_by_client.pop(body.client, None)

    def _admit(self, body: _Body, more: int) -> bool:
        """Whether ``more`` bytes of ``body`` fit, making room from bigger holders if need be."""
        budget = self.in_flight_bytes or 0
        if self.in_flight == body.held:  # a body alone always gets through
            return True
        mine = self.in_flight_by_client.get(body.client, 0) + more
        if mine > budget // 2:
            return False
        while self.in_flight + more > budget:
            holding = self.in_flight_by_client
            bigger = [b for b in self._arriving if b.held and b.client != body.client and holding[b.client] > mine]
            if not bigger:
                return False
            self._let_go(max(bigger, key=lambda b: (holding[b.client], b.held)))
        return True

    def _let_go(self, body: _Body) -> None:
        """Free a body still arriving at once: it hears 429 and its client sends it again later."""
        body.evicted = True
        self._hold(body, -body.held)
        self._arriving.remove(body)
        if body.waiting is not None:  # cut its wait for the next chunk short
            body.waiting.reschedule(asyncio.get_running_loop().time())

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, limit: int, upload: bool, body: _Body | None
    ) -> None:
        """Django's app, with the body counted against the budget as it arrives (the bytes held,
        not the size a client declares: a body that sends nothing holds nothing), cut off past
        ``limit``, let go when it stalls, and answered 429 when the budget is full."""
        received = 0
        overflow = stalled = started = body_done = False
        deadline = time.monotonic() + BODY_IDLE_SECONDS
        if body is not None:
            self._arriving.append(body)

        def busy() -> bool:
            return body is not None and body.evicted

        async def limited_receive() -> Message:
            nonlocal received, overflow, stalled, body_done, deadline
            if overflow or stalled or busy():
                return {"type": "http.disconnect"}
            if body_done:  # Django waiting for a disconnect while its view runs: no clock on that
                return await receive()
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())) as waiting:
                    if body is not None:
                        body.waiting = waiting
                    message = await receive()
            except TimeoutError:
                stalled = not busy()
                return {"type": "http.disconnect"}
            finally:
                if body is not None:
                    body.waiting = None
            if busy():
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                body_done = not message.get("more_body", False)
                now = time.monotonic()
                deadline = min(deadline + chunk / MIN_BODY_RATE, now + BODY_IDLE_SECONDS)
                if received > limit:
                    overflow = True
                    return {"type": "http.disconnect"}
                if body is not None:
                    if chunk and not self._admit(body, chunk):
                        self._let_go(body)
                        return {"type": "http.disconnect"}
                    self._hold(body, chunk)
                    if body_done:
                        self._arriving.remove(body)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        finally:
            if body is not None:
                self._hold(body, -body.held)
                if body in self._arriving:
                    self._arriving.remove(body)
        if started:
            return
        if overflow:
            if received <= self.drain_bytes:
                await _drain(receive, self.drain_bytes - received)
            await self._refuse(scope, send, upload)
        elif busy():
            if not body_done:  # read the rest and drop it, so the client gets to read its 429
                await _drain(receive, self.max_bytes - received)
            headers = [(b"retry-after", str(BUSY_RETRY_AFTER).encode()), (b"connection", b"close")]
            await _answer(scope, send, 429, BUSY, headers)
        elif stalled:
            await _answer(scope, send, 408, STALLED, [(b"connection", b"close")])

    async def _refuse(self, scope: Scope, send: Send, upload: bool) -> None:
        await _answer(scope, send, 413, too_large_message(self.max_upload_mb) if upload else NOT_HERE)


async def _answer(
    scope: Scope, send: Send, status: int, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """A one-sentence answer, as JSON ``{"error": …}`` when the client asks for JSON."""
    accept = dict(scope.get("headers") or []).get(b"accept", b"")
    if b"json" in accept:
        body, kind = json.dumps({"error": text}).encode(), b"application/json"
    else:
        body, kind = text.encode(), b"text/plain; charset=utf-8"
    head = [(b"content-type", kind), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


async def _drain(receive: Receive, budget: int = DRAIN_BYTES) -> None:
    """Read and drop the rest of a request body (at most ``budget`` bytes)."""
    while budget > 0:
        try:
            async with asyncio.timeout(BODY_IDLE_SECONDS):
                message = await receive()
        except TimeoutError:  # a client that stopped sending gets its answer all the same
            return
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or []:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class MessageRate:
    """At most ``limit`` messages per ``window`` seconds on one websocket (a sliding window,
    kept in the consumer's memory: a socket is one connection to one process)."""

    def __init__(self, limit: int, window: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window, self.clock = limit, window, clock
        self._times: deque[float] = deque()

    def allow(self) -> bool:
        now = self.clock()
        while self._times and self._times[0] <= now - self.window:
            self._times.popleft()
        if len(self._times) >= self.limit:
            return False
        self._times.append(now)
        return True

"""Guards against one client exhausting the service: an ASGI guard that refuses request bodies
over the upload limit before Django buffers them (and any body over 1 MB except a photo
upload's), holds the bodies one web process takes in at once to a budget, of which one client
address gets at most half, and lets go of a body that stalls; and a message rate for websockets."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from webapp.addresses import scope_address

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[..., Awaitable[None]]


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
MIN_BODY_RATE = 64 * 1024  # … and so is one slower than this, in bytes a second, past its first half minute
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
        # account's bodies against half of it; a body that would pass it is answered 429 with
        # Retry-After, which the album page waits out by itself. A body alone always gets through.
        self.in_flight_bytes = in_flight_bytes
        self.in_flight = 0
        self.in_flight_by_client: dict[str, int] = {}
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
        await self._guarded(scope, receive, send, limit, upload, client if counted else None)

    def _over_budget(self, more: int, mine: int) -> bool:
        budget = self.in_flight_bytes or 0
        return self.in_flight + more > budget or mine + more > budget // 2

    def _hold(self, client: str, amount: int) -> None:
        self.in_flight += amount
        left = self.in_flight_by_client.get(client, 0) + amount
        if left > 0:
            self.in_flight_by_client[client] = left
        else:
            self.in_flight_by_client.pop(client, None)

    async def _guarded(
        self, scope: Scope, receive: Receive, send: Send, limit: int, upload: bool, client: str | None
    ) -> None:
        """Django's app, with the body counted against the budget as it arrives (the bytes held,
        not the size a client declares: a body that sends nothing holds nothing), cut off past
        ``limit``, let go when it stalls, and answered 429 when the budget is full."""
        received = held = 0
        overflow = stalled = busy = started = body_done = False
        began = time.monotonic()

        async def limited_receive() -> Message:
            nonlocal received, held, overflow, stalled, busy, body_done
            if overflow or stalled or busy:
                return {"type": "http.disconnect"}
            if body_done:  # Django waiting for a disconnect while its view runs: no clock on that
                return await receive()
            # a body too slow to finish is let go, so it cannot hold its share of the budget for ever
            patience = BODY_IDLE_SECONDS + received / MIN_BODY_RATE - (time.monotonic() - began)
            try:
                async with asyncio.timeout(max(0.0, min(BODY_IDLE_SECONDS, patience))):
                    message = await receive()
            except TimeoutError:
                stalled = True
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                chunk = len(message.get("body", b""))
                received += chunk
                body_done = not message.get("more_body", False)
                if received > limit:
                    overflow = True
                    return {"type": "http.disconnect"}
                if client is not None and chunk:
                    # others hold some: then this one waits (429) past the budget or half of it
                    mine = self.in_flight_by_client.get(client, 0)
                    if self.in_flight > held and self._over_budget(chunk, mine):
                        busy = True
                        return {"type": "http.disconnect"}
                    self._hold(client, chunk)
                    held += chunk
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        finally:
            if client is not None and held:
                self._hold(client, -held)
        if started:
            return
        if overflow:
            if received <= self.drain_bytes:
                await _drain(receive, self.drain_bytes - received)
            await self._refuse(scope, send, upload)
        elif busy:
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

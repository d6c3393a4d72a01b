"""Guards against one client exhausting the service: an ASGI guard that refuses request bodies
over the upload limit before Django buffers them, and holds the bodies one web process takes
in at once to a budget; and a message rate for websockets."""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

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
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_upload_mb = max_upload_mb
        self.drain_bytes = drain_bytes
        # Every declared body of SMALL_BODY or more counts against this until its request is
        # answered (Django holds it in memory that long); one over budget is answered 429 with
        # Retry-After, which the album page waits out by itself. One body always gets through.
        self.in_flight_bytes = in_flight_bytes
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            if declared <= self.drain_bytes:
                await _drain(receive)
            await self._refuse(scope, send)
            return
        reserved = declared if declared is not None and declared >= SMALL_BODY and self.in_flight_bytes else 0
        if reserved and self.in_flight and self.in_flight + reserved > (self.in_flight_bytes or 0):
            await _drain(receive)
            await _answer(scope, send, 429, BUSY, [(b"retry-after", str(BUSY_RETRY_AFTER).encode())])
            return
        self.in_flight += reserved
        try:
            await self._guarded(scope, receive, send)
        finally:
            self.in_flight -= reserved

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = 0
        overflow = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, overflow
            if overflow:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    overflow = True
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, tracking_send)
        if overflow and not started:
            if received <= self.drain_bytes:
                await _drain(receive, self.drain_bytes - received)
            await self._refuse(scope, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        await _answer(scope, send, 413, too_large_message(self.max_upload_mb))


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
        message = await receive()
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

"""The unlock websockets: /ws/share/<token>/ (anyone with the link) and /ws/albums/<id>/unlock/
(the owner's album page). Both speak the protocol of webapp.sharing.protocol.

The share token is the capability, so anonymous sockets are welcome there, but the album is
looked up again for every message: a link rotated while the page is open stops working at
once. Origins are checked by AllowedHostsOriginValidator in webapp.asgi.

Each unlock makes a fresh viewing session: a random key K that lives only in this consumer.
Workers leave each recovered photo sealed under K in the viewing's mailbox in Redis and ring
through the channel layer (webapp.sharing.sessions); the consumer takes it, opens it and sends
it to the browser in a binary frame, then forgets it. It also looks in the mailbox every
REDELIVERY_EVERY seconds, so a lost ring delays a photo, never loses it. Closing the socket (or
a reload) forgets K, and results still on their way can no longer be opened by anyone.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from cipher_worker import keys
from cipher_worker.errors import WrongKey
from cipher_worker.turns import Busy
from webapp import jobs, workers
from webapp.addresses import scope_address
from webapp.albums.forms import MAX_PASSPHRASE
from webapp.albums.models import Album
from webapp.limits import MessageRate
from webapp.texts import NO_WORKER, OUR_FAULT

from . import protocol, sessions, transit
from .models import UnlockAttempt
from .unlocking import AHEAD, GRACE, QUEUE_DOWN, Refused, Started, busy, check_unlock, open_unlock, turn_names

CLOSE_NOT_FOUND = 4404
log = logging.getLogger(__name__)

LINK_GONE = "This share link no longer works: the album's owner has replaced it. Ask them for the new one."
ALBUM_GONE = "This album no longer exists."
TOO_SLOW = "No worker recovered this photo in time; press “Show real faces” again."
BAD_REQUEST = "Choose your name and type your password."
TOO_FAST = "Too many requests from this page; wait a minute and try again."
LOOK_RATE = 60  # "look" messages per minute a page may send while scrolling (they cost no password work)
FRAME_DEADLINE = 30  # seconds a page may take to read one recovered photo
MAX_IN_VIEW = 100  # photo ids a page may name as in view (unlock's "first", "look")
REDELIVERY_EVERY = 2.0  # seconds between looks in the mailbox for outcomes whose ring was lost
NO_WORKER_PATIENCE = 20.0  # seconds without any live worker before the photos still awaited fail


@dataclass
class ViewingSession:
    id: str
    key: bytes = field(repr=False)
    pending: set[str]
    recovered: int = 0
    failed: int = 0
    watchdog: asyncio.Task[None] | None = None
    later: collections.deque[tuple[str, str]] = field(default_factory=collections.deque)  # not queued yet
    deadline: float = 0.0  # time.monotonic() after which photos still missing took too long


class UnlockConsumer(AsyncJsonWebsocketConsumer):
    via: str = UnlockAttempt.Via.SHARE_LINK
    gone_message = LINK_GONE
    session: ViewingSession | None = None
    rate: MessageRate | None = None
    look_rate: MessageRate | None = None

    # --- which album: one per socket, checked again for every message -------------------
    @database_sync_to_async
    def current_album(self) -> Album | None:
        raise NotImplementedError

    async def connect(self) -> None:
        if await self.current_album() is None:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        await self.accept()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        # However the socket ends — a clean close, a connection that died while a photo was going
        # out (then disconnect() is never called), or a page that stopped reading — its viewing
        # ends and nothing it was sent stays in this process.
        main = asyncio.current_task()
        stalled = False

        async def send_in_time(message: Any) -> None:
            nonlocal stalled
            try:  # a page that stops reading holds every write: it is let go, not waited for
                await asyncio.wait_for(send(message), FRAME_DEADLINE)
            except RuntimeError:  # the server has closed the socket already (its keepalive gave up)
                raise StopConsumer() from None
            except TimeoutError:
                stalled = True
                log.info("a page stopped reading; its viewing ends")
                await self._end()
                if main is not None and main is not asyncio.current_task():
                    main.cancel()  # stuck in the watchdog: the socket's own loop stops too
                raise StopConsumer() from None

        try:
            await super().__call__(scope, receive, send_in_time)
        except asyncio.CancelledError:
            if not stalled:
                raise
        finally:
            await asyncio.shield(self._end())

    async def _end(self) -> None:
        await self.forget()
        buffers = getattr(self.channel_layer, "receive_buffer", None)
        if isinstance(buffers, dict) and getattr(self, "channel_name", None):
            # what the layer fetched for this channel would wait for a reader for ever; results
            # already on their way when the viewing ended are dropped a little later too
            buffers.pop(self.channel_name, None)
            asyncio.get_running_loop().call_later(sessions.SEND_PATIENCE + 5, buffers.pop, self.channel_name, None)

    async def forget(self) -> None:
        """End the current viewing: the workers skip its photos still queued and send nothing more."""
        session, self.session = self.session, None
        if session is None:
            return
        if session.watchdog is not None:
            session.watchdog.cancel()
        try:
            await sync_to_async(sessions.close_session)(session.id, scope_address(self.scope))
            await sync_to_async(transit.discard_unlocks)([transit_id for _, transit_id in session.later])
        except redis.RedisError:  # it ends with its TTL all the same
            log.warning("could not close viewing session %s", session.id, exc_info=True)

    # --- from the browser ----------------------------------------------------------------
    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if self.rate is None:
            self.rate, self.look_rate = MessageRate(settings.VEIL_SOCKET_RATE), MessageRate(LOOK_RATE)
        try:
            content = json.loads(text_data or "")
        except ValueError:
            content = None
        if isinstance(content, dict) and content.get("type") == protocol.LOOK:
            # scrolling: it reorders this page's own queue, with no database or password work
            if self.look_rate is not None and self.look_rate.allow():
                self._look(content)
            return
        if not self.rate.allow():  # before any database or password work
            await self.send_json(protocol.refusal("rate_limited", TOO_FAST))
            return
        await self.receive_json(content)

    def _look(self, content: dict[str, Any]) -> None:
        """Move the photos the page now shows ahead of the viewing's photos not yet queued."""
        session, data = self.session, content.get("data")
        wanted = _photo_ids(data.get("photos") if isinstance(data, dict) else None)
        if session is None or not wanted:
            return
        rank = {photo_id: i for i, photo_id in enumerate(wanted)}
        ahead = sorted((entry for entry in session.later if entry[0] in rank), key=lambda entry: rank[entry[0]])
        if ahead:
            rest = [entry for entry in session.later if entry[0] not in rank]
            session.later = collections.deque([*ahead, *rest])

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == protocol.LOCK:
            await self.forget()
            return
        album = await self.current_album()
        if album is None:
            await self.forget()
            await self.send_json(protocol.refusal("link_gone", self.gone_message))
            await self.close(code=CLOSE_NOT_FOUND)
            return
        request = _unlock_request(content) if kind == protocol.UNLOCK else None
        if request is None:
            await self.send_json(protocol.refusal("bad_request", BAD_REQUEST))
            return
        await self.unlock(album, *request)

    async def unlock(self, album: Album, slot_id: int, password: str, first: list[str]) -> None:
        await self.forget()  # a new unlock replaces the last one; its late results are dropped
        session_id, key = uuid.uuid4().hex, os.urandom(protocol.SESSION_KEY_BYTES)
        client = scope_address(self.scope)
        # Off the thread every socket's database calls share: the cheap checks, then the wait for
        # a fair Argon2 turn here in the event loop, holding no thread (cipher_worker.turns), then
        # the password in a thread of its own (≈ 0.2 s that must not stall other sockets).
        in_thread = functools.partial(database_sync_to_async, thread_sensitive=False)
        checked = await in_thread(check_unlock)(album, slot_id, client=client, via=self.via)
        outcome: Started | Refused
        if isinstance(checked, Refused):
            outcome = checked
        else:
            try:
                async with keys.turn_before_hashing(*turn_names(client), urgent=True):
                    outcome = await in_thread(open_unlock)(
                        album,
                        checked,
                        password,
                        client=client,
                        session_id=session_id,
                        session_key=key,
                        reply_channel=self.channel_name,
                        via=self.via,
                        first=first,
                    )
            except Busy:
                outcome = await in_thread(busy)(checked, client)
        del password
        if isinstance(outcome, Refused):
            await self.send_json(protocol.refusal(outcome.code, outcome.message))
            return
        session = ViewingSession(session_id, key, set(outcome.photo_ids), later=collections.deque(outcome.later))
        self.session = session
        photos = [*outcome.photo_ids, *outcome.failed]
        await self.send_json(
            protocol.message(protocol.STARTED, session=session_id, photos=photos, workers=outcome.workers)
        )
        for photo_id, text in outcome.failed.items():
            await self._failed(session, photo_id, text)
        if session.pending:
            session.watchdog = asyncio.create_task(self._watch(session, outcome.longest_wait + GRACE))
            # the first photos may be in the mailbox already: their rings came before the viewing was ours
            await self._collect(session, sorted(session.pending))
        else:
            await self._finish(session)

    # --- from the workers: a ring through the channel layer, the outcome in the mailbox -----
    async def unlock_ready(self, event: dict[str, Any]) -> None:
        session, photo_id = self._awaited(event)
        if session is None:  # an old viewing's, or a photo already taken: nothing to do
            return
        await self._collect(session, [photo_id])

    async def _collect(self, session: ViewingSession, photo_ids: list[str]) -> None:
        """Deliver whatever outcomes of ``photo_ids`` wait in the session's mailbox."""
        try:
            # off the thread every socket's database calls share: this runs every few seconds
            found = await sync_to_async(sessions.take, thread_sensitive=False)(session.id, photo_ids)
        except redis.RedisError:  # looked at again in a moment
            log.warning("could not look in the mailbox of viewing %s", session.id, exc_info=True)
            return
        for photo_id, (kind, payload) in found.items():
            if self.session is not session or photo_id not in session.pending:
                continue
            if kind == sessions.RESULT:
                await self._deliver(session, photo_id, payload)
            else:
                await self._failed(session, photo_id, payload.decode(errors="replace") or OUR_FAULT)

    async def _deliver(self, session: ViewingSession, photo_id: str, sealed: bytes) -> None:
        try:
            image = protocol.open_result(session.key, session.id, photo_id, sealed)
        except WrongKey:
            await self._give_credit(session)
            await self._failed(session, photo_id, OUR_FAULT)
            return
        content_type = protocol.CONTENT_TYPES[settings.VEIL_UNLOCK_FORMAT]
        session.pending.discard(photo_id)
        session.recovered += 1
        frame = protocol.photo_frame(session.id, photo_id, content_type, image)
        del image
        await self.send(bytes_data=frame)  # within FRAME_DEADLINE, or the consumer ends (__call__)
        del frame
        await self._give_credit(session)
        await self._queue_next(session)
        if not session.pending:
            await self._finish(session)

    async def _queue_next(self, session: ViewingSession) -> None:
        """A photo of this viewing has arrived (or failed): queue its next ones for the workers, up
        to AHEAD of them on the queue (a viewing starts with AHEAD_AT_FIRST)."""
        while self.session is session and session.later:
            if len(session.pending) - len(session.later) >= AHEAD:  # queued, not yet arrived
                return
            photo_id, transit_id = session.later.popleft()
            if photo_id not in session.pending:  # given up on already
                continue
            try:
                await sync_to_async(self._keep_viewing, thread_sensitive=False)(session, transit_id)
                await sync_to_async(jobs.queue_recovery, thread_sensitive=False)(
                    photo_id, transit_id, self.channel_name, session.id
                )
            except Exception:
                log.exception("could not queue photo %s of viewing %s", photo_id, session.id)
                await self._failed(session, photo_id, QUEUE_DOWN)
                return

    def _keep_viewing(self, session: ViewingSession, transit_id: str) -> None:
        """A viewing that is still receiving stays open, and so does its next request, however
        long taking turns with other viewings makes it (each wait starts again per photo)."""
        ttl = settings.VEIL_UNLOCK_TTL
        transit.keep_unlock(transit_id, ttl)
        sessions.extend(session.id, scope_address(self.scope), ttl + GRACE)
        session.deadline = max(session.deadline, time.monotonic() + ttl + GRACE)

    async def _give_credit(self, session: ViewingSession) -> None:
        try:
            await sync_to_async(sessions.give_credit)(session.id)
        except redis.RedisError:  # the workers then wait, and the page is told the photo took too long
            log.warning("could not pace viewing session %s", session.id, exc_info=True)

    def _awaited(self, event: dict[str, Any]) -> tuple[ViewingSession | None, str]:
        """The current session if ``event`` is one of its photos still on the way."""
        session, photo_id = self.session, str(event.get("photo_id", ""))
        if session is None or event.get("session") != session.id or photo_id not in session.pending:
            return None, photo_id
        return session, photo_id

    async def _failed(self, session: ViewingSession, photo_id: str, text: str) -> None:
        session.pending.discard(photo_id)
        session.failed += 1
        await self.send_json(protocol.message(protocol.FAILED, session=session.id, photo_id=photo_id, message=text))
        await self._queue_next(session)
        if not session.pending:
            await self._finish(session)

    async def _finish(self, session: ViewingSession) -> None:
        if session.watchdog is not None and session.watchdog is not asyncio.current_task():
            session.watchdog.cancel()
        await self.send_json(
            protocol.message(protocol.FINISHED, session=session.id, recovered=session.recovered, failed=session.failed)
        )

    async def _watch(self, session: ViewingSession, patience: float) -> None:
        """Look in the mailbox every REDELIVERY_EVERY seconds while photos are awaited; after
        ``patience`` seconds (or longer, while photos keep arriving: ``session.deadline``), say
        of each photo still missing that it took too long."""
        session.deadline = max(session.deadline, time.monotonic() + patience)
        worker_seen = time.monotonic()
        with contextlib.suppress(Exception):  # the socket may be closing
            while self.session is session and session.pending:
                await asyncio.sleep(REDELIVERY_EVERY)
                await self._collect(session, sorted(session.pending))
                if await self._workers_alive():
                    worker_seen = time.monotonic()
                elif time.monotonic() - worker_seen >= NO_WORKER_PATIENCE:
                    await self._give_up(session, NO_WORKER)
                    return
                if time.monotonic() >= session.deadline:
                    await self._give_up(session, TOO_SLOW)

    async def _give_up(self, session: ViewingSession, text: str) -> None:
        """Say of each photo still missing why it will not come; no worker is asked for those not
        queued yet, and their requests go."""
        never_asked = [transit_id for _, transit_id in session.later]
        session.later.clear()
        with contextlib.suppress(redis.RedisError):
            await sync_to_async(transit.discard_unlocks)(never_asked)
        for photo_id in sorted(session.pending):
            if self.session is session:
                await self._failed(session, photo_id, text)

    async def _workers_alive(self) -> bool:
        """Whether any worker is alive (Redis being away counts as yes: that is not the workers' fault)."""
        try:
            return bool(await sync_to_async(workers.alive_count, thread_sensitive=False)())
        except redis.RedisError:
            return True


def _unlock_request(content: dict[str, Any]) -> tuple[int, str, list[str]] | None:
    """(slot id, password, photos in view) of a well-formed unlock message, else None."""
    data = content.get("data")
    if not isinstance(data, dict):
        return None
    slot, password = data.get("slot"), data.get("password")
    if isinstance(slot, str) and slot.isascii() and slot.isdigit() and len(slot) <= 18:
        slot = int(slot)
    if not isinstance(slot, int) or isinstance(slot, bool) or not 0 < slot < 2**63:
        return None
    if not isinstance(password, str) or not 0 < len(password) <= MAX_PASSPHRASE:
        return None
    return slot, password, _photo_ids(data.get("first"))


def _photo_ids(value: Any) -> list[str]:
    """The photo ids (UUIDs) in ``value`` as the page sent them, in order, at most MAX_IN_VIEW."""
    if not isinstance(value, list):
        return []
    found: list[str] = []
    for item in value[:MAX_IN_VIEW]:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            found.append(str(uuid.UUID(item)))
    return found


class ShareUnlockConsumer(UnlockConsumer):
    """/ws/share/<token>/: the share token is the capability; no login needed."""

    via = UnlockAttempt.Via.SHARE_LINK
    gone_message = LINK_GONE

    @database_sync_to_async
    def current_album(self) -> Album | None:
        token = self.scope["url_route"]["kwargs"]["token"]
        return Album.objects.filter(share_token=token).first()


class OwnerUnlockConsumer(UnlockConsumer):
    """/ws/albums/<id>/unlock/: the owner's own album page (a logged-in session)."""

    via = UnlockAttempt.Via.ALBUM_PAGE
    gone_message = ALBUM_GONE

    @database_sync_to_async
    def current_album(self) -> Album | None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            return None
        album_id = self.scope["url_route"]["kwargs"]["album_id"]
        return Album.objects.owned_by(user.pk).filter(pk=album_id).first()

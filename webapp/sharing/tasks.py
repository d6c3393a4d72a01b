"""The worker's half of an unlock: one photo's real faces, recovered in memory for one session.

The task message holds ids only (photo, transit entry, reply channel, session). The worker
takes the sealed request from the transit store (deleting it as it reads), opens it with the
transit private key, recovers the photo, encodes it, seals it under the session key and leaves
it in the viewing's mailbox, then rings the consumer (webapp.sharing.sessions). The recovered
pixels exist only in this process's memory, for the length of the task: nothing of them is
written to disk, the database or the logs, and Redis only ever holds them sealed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from asgiref.sync import async_to_sync
from celery import Task, shared_task
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings

from cipher_worker import api as cipher_api
from cipher_worker.errors import CodecMismatch, VeilError, WrongKey
from cipher_worker.imageio import encode_image, shrink_to
from webapp import jobs
from webapp.albums.models import Photo
from webapp.texts import MODEL_CHANGED, OUR_FAULT, PHOTO_GONE, UNLOCK_WAITED_TOO_LONG

from . import protocol, sessions, transit

log = logging.getLogger(__name__)
T = TypeVar("T")

# Recovery work runs in a thread of its own at a lower CPU priority (Linux: a thread's own
# niceness): a family's viewing of a hundred photos keeps the worker processes busy, and an
# upload running on the other core — what its owner waits for — should not share it evenly.
# At +10 an upload gets ~90% of a core it shares (at +5 ~75%: 2.3× its idle time, now 1.4×).
BACKGROUND_NICENESS = 10
CREDIT_RETRY = 0.5  # seconds a photo whose page has no room yet goes back to the queue for …
CREDIT_RETRY_MAX = 4.0  # … doubling each time, up to this


# max_retries here: retry(max_retries=None) would mean Celery's default of 3. The retries end when
# the viewing does (its session has a TTL), when take_credit answers -1.
@shared_task(bind=True, name=jobs.RECOVER_PHOTO, ignore_result=True, max_retries=None)
def recover_photo(self: Task, photo_id: str, transit_id: str, reply_channel: str, session_id: str) -> str:
    """Recover one photo for one viewing session; returns "sent", "failed" or "abandoned" (the page
    closed or moved on: nothing is recovered or sent) for logs and tests.

    A viewing has at most sessions.IN_FLIGHT photos on their way to its page. When none is free
    the task goes back to the queue for a moment instead of waiting here: a slow page never holds
    a worker that other viewers' photos need."""
    credit = sessions.take_credit(session_id)
    if credit == 0:  # half a second, then longer: a page that has stopped costs few retries
        wait = min(CREDIT_RETRY * 2 ** min(self.request.retries or 0, 8), CREDIT_RETRY_MAX)
        raise self.retry(countdown=wait)
    if credit < 0:
        with contextlib.suppress(WrongKey):
            transit.take_unlock(transit_id, photo_id)  # its sealed request goes all the same
        return "abandoned"
    outcome = _recover(photo_id, transit_id, reply_channel, session_id)
    if outcome != "sent":  # the failure message needs no room: the photo's place is free again
        sessions.give_credit(session_id)
    return outcome


_background: ThreadPoolExecutor | None = None
_background_lock = threading.Lock()


def _lower_this_threads_priority() -> None:
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.nice(0) + BACKGROUND_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not allowed: recovery runs at the worker's priority
        log.info("recovery work runs at the worker's own CPU priority")


def in_background(work: Callable[[], T]) -> T:
    """``work()`` on this process's recovery thread (lower CPU priority), waited for here."""
    global _background
    with _background_lock:
        if _background is None:
            _background = ThreadPoolExecutor(1, "veil-recovery", initializer=_lower_this_threads_priority)
    return _background.submit(work).result()


def _recover(photo_id: str, transit_id: str, reply_channel: str, session_id: str) -> str:
    try:
        payload = transit.take_unlock(transit_id, photo_id)  # taken out of Redis in any case
    except WrongKey:
        return _fail(reply_channel, session_id, photo_id, OUR_FAULT)
    if payload is None:
        return _fail(reply_channel, session_id, photo_id, UNLOCK_WAITED_TOO_LONG)
    try:
        request = protocol.UnlockRequest.from_bytes(payload)
    except ValueError:
        return _fail(reply_channel, session_id, photo_id, OUR_FAULT)
    finally:
        del payload
    try:
        photo = Photo.objects.get(pk=uuid.UUID(photo_id), status=Photo.Status.DONE)
        with photo.image.open("rb") as f:
            image = f.read()
    except (Photo.DoesNotExist, FileNotFoundError):
        return _fail(reply_channel, session_id, photo_id, PHOTO_GONE)
    try:
        recovery = bytes(photo.envelope)
        sealed = in_background(functools.partial(_recovered_and_sealed, image, recovery, request, session_id, photo_id))
    except CodecMismatch as exc:  # the deployment changed its codec or weights: staff's matter, not the viewer's
        log.error("cannot recover photo %s: %s", photo_id, exc)
        return _fail(reply_channel, session_id, photo_id, MODEL_CHANGED)
    except VeilError as exc:  # the photo's own problem (altered or corrupt recovery data…)
        return _fail(reply_channel, session_id, photo_id, _sentence(str(exc)))
    except Exception:
        log.exception("recovering photo %s failed", photo_id)  # the traceback holds no pixels or keys
        return _fail(reply_channel, session_id, photo_id, OUR_FAULT)
    finally:
        del request, image
    posted = sessions.post(session_id, photo_id, sessions.RESULT, sealed)
    del sealed
    if not posted:  # the page closed or moved on while this photo was recovered
        return "abandoned"
    _ring(reply_channel, session_id, photo_id)
    return "sent"


def _recovered_and_sealed(
    image: bytes, recovery: bytes, request: protocol.UnlockRequest, session_id: str, photo_id: str
) -> bytes:
    recovered = cipher_api.recover_photo(
        image, recovery, content_key=request.content_key, decoy_password=request.decoy_password
    )
    # For a screen: at most VEIL_UNLOCK_MAX_SIDE pixels (a 60 MP PNG would be a 100 MB frame),
    # JPEG by default (PNG keeps the recovered faces pixel for pixel, at about 6× the size).
    pixels = shrink_to(recovered.pixels, settings.VEIL_UNLOCK_MAX_SIDE)
    del recovered
    encoded = encode_image(pixels, settings.VEIL_UNLOCK_FORMAT)
    del pixels
    return protocol.seal_result(request.session_key, session_id, photo_id, encoded)


def _sentence(text: str) -> str:
    text = text.strip()
    return (text[:1].upper() + text[1:]).rstrip(".") + "." if text else OUR_FAULT


def _fail(reply_channel: str, session_id: str, photo_id: str, text: str) -> str:
    if not sessions.post(session_id, photo_id, sessions.FAILURE, text.encode()):
        return "abandoned"
    _ring(reply_channel, session_id, photo_id)
    return "failed"


def _ring(channel: str, session_id: str, photo_id: str) -> None:
    """Tell the page an outcome is in its mailbox. Best effort: the page also looks by itself."""
    layer = get_channel_layer()
    if layer is None:
        return
    deadline = time.monotonic() + sessions.SEND_PATIENCE
    while True:
        try:
            async_to_sync(layer.send)(channel, {"type": "unlock.ready", "session": session_id, "photo_id": photo_id})
            return
        except ChannelFull:
            if time.monotonic() > deadline or not sessions.is_open(session_id):
                return  # the page finds the photo in its mailbox when it next looks
            time.sleep(0.2)

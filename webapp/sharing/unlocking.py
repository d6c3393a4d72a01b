"""Starting an unlock in the web process: check the recipient, limit tries, open the keys, queue.

``begin_unlock`` runs in the websocket consumer's thread. It unwraps the chosen key slot with
the typed password (Argon2id), opens each photo's sealed content key with the album private
key and drops that key again; each content key goes to a worker only sealed to the transit
key together with the viewing session's key (webapp.sharing.protocol). Every attempt is
recorded for the owner, without the password.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import redis
from django.conf import settings
from django.db.models import BinaryField, F, Func, Value
from django.utils import timezone
from django.utils.formats import date_format
from django.views.decorators.debug import sensitive_variables
from kombu.exceptions import OperationalError

from cipher_worker import envelope, keys
from cipher_worker.errors import VeilError, WrongKey
from cipher_worker.turns import Busy
from webapp import jobs, keywork, workers
from webapp.addresses import network_key
from webapp.albums.models import Album, AlbumKeySlot, Photo
from webapp.texts import BUSY

from . import protocol, sessions, transit
from .models import UnlockAttempt
from .tries import limiter, too_many_tries, unknown_slot

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

WRONG_PASSWORD = "That password does not open this album."
REVOKED = "This name can no longer unlock this album; ask the album's owner."
QUEUE_DOWN = "Veil's photo queue is not reachable right now; please try again in a minute."
KEY_MISMATCH = "This photo's key does not match the album's key; it cannot be shown unlocked."
TOO_MANY_VIEWINGS = "Real faces are already shown on several of your pages; close one of them and try again."
GRACE = 60  # seconds a viewing stays open beyond the longest transit wait (the page's patience too)
# Photos of one viewing on the unlock queue at a time: the page queues the next as each one
# arrives, so viewings that start together take turns instead of the last waiting for all others.
# A viewing starts with one, so that ten starting together each see a first photo soon.
AHEAD = 2
AHEAD_AT_FIRST = 1


def expired(slot: AlbumKeySlot) -> str:
    assert slot.expires_at is not None
    until = date_format(timezone.localtime(slot.expires_at), "j F Y, H:i")
    return f"Access for {slot.label} ended on {until}; ask the album's owner to extend it."


@dataclass
class Refused:
    code: str
    message: str


@dataclass
class Started:
    """The photos queued for this session, and those that failed before any worker saw them."""

    photo_ids: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    longest_wait: int = 0  # seconds the last transit entry may wait for a worker
    later: list[tuple[str, str]] = field(default_factory=list)  # (photo id, transit id) not queued yet
    workers: int = 0  # workers alive when the viewing began (webapp.workers)


def _refused_while_redis_is_down(begin: Callable[P, R | Refused]) -> Callable[P, R | Refused]:
    @functools.wraps(begin)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R | Refused:
        try:
            return begin(*args, **kwargs)
        except redis.RedisError:
            log.exception("the unlock try counter is not reachable")
            return Refused("unavailable", QUEUE_DOWN)

    return guarded


def turn_names(client: str) -> tuple[str, ...]:
    """Whose Argon2 run an unlock from ``client`` is, for fair turns (cipher_worker.turns): the
    address, then its network, so a flood spread over many addresses of one network carries
    the network's load. Not the album or its owner: then a link holder's wrong guesses at other
    names, or the family's own viewings, would push the whole family (and the owner's album
    creation) behind a stranger's throwaway accounts."""
    return (f"address:{client}", f"net:{network_key(client)}")


@dataclass
class Checked:
    """An unlock whose cheap checks passed: the slot to try, one try of it reserved."""

    slot: AlbumKeySlot


@_refused_while_redis_is_down
def check_unlock(album: Album, slot_id: int, *, client: str, via: str) -> Checked | Refused:
    """Everything before the password: the address's allowance, the slot, its tries, its expiry
    (refusals that cost no Argon2 run, so they never wait for a turn)."""
    try:
        keywork.spend("unlock", client)  # right passwords too: each one costs an Argon2 run and a queue of tasks
    except keywork.TooMuchWork as exc:
        return Refused("unavailable" if exc.unavailable else "rate_limited", str(exc))
    tries = limiter()
    slots = AlbumKeySlot.objects.filter(album=album, pk=slot_id)
    if via == UnlockAttempt.Via.SHARE_LINK:  # the owner's passphrase is never tried through a share link
        slots = slots.exclude(kind=AlbumKeySlot.Kind.OWNER)
    slot = slots.first()
    if slot is None:
        # No password is checked, but the log is kept from flooding: unknown names share a limit.
        if tries.reserve(unknown_slot(album.pk), client).allowed:
            _record(album, None, UnlockAttempt.Outcome.REVOKED, via)
        return Refused("revoked", REVOKED)
    reserved = tries.reserve(slot.pk, client)
    if not reserved.allowed:  # refused before any Argon2 work; logged once per window
        if reserved.first_refusal:
            _record(album, slot, UnlockAttempt.Outcome.RATE_LIMITED, via)
        return Refused("rate_limited", too_many_tries(reserved.wait))
    if slot.is_expired():  # a try used up all the same: tries at an expired slot are limited too
        _record(album, slot, UnlockAttempt.Outcome.EXPIRED, via)
        return Refused("expired", expired(slot))
    return Checked(slot)


def busy(checked: Checked, client: str) -> Refused:
    """No turn came for a checked unlock: its try goes back (no password was checked)."""
    with contextlib.suppress(redis.RedisError):
        limiter().give_back(checked.slot.pk, client)
    return Refused("busy", BUSY)


@_refused_while_redis_is_down
@sensitive_variables("password", "private")
def open_unlock(
    album: Album,
    checked: Checked,
    password: str,
    *,
    client: str,
    session_id: str,
    session_key: bytes,
    reply_channel: str,
    via: str,
    first: Sequence[str] = (),
) -> Started | Refused:
    """Try the password at the checked slot and, if it opens, queue the album's photos."""
    slot, tries = checked.slot, limiter()
    try:
        # urgent: someone waits on the page (a no-op inside keys.turn_before_hashing)
        with keys.hashing_for(*turn_names(client), urgent=True):
            private: bytes | None = slot.unwrap(password)
    except WrongKey:
        private = None
    except Busy:
        return busy(checked, client)
    if private is None:
        _record(album, slot, UnlockAttempt.Outcome.WRONG_PASSWORD, via)
        if not album.decoy_mode:
            return Refused("wrong_password", WRONG_PASSWORD)
        # Decoy mode: carry on exactly like a real unlock, with the typed password instead of keys.
        decoy = protocol.UnlockRequest(session_key, decoy_password=password)
        requests = ((photo_id, decoy) for photo_id, _ in _photos(album, first))
        return _queue(requests, session_id, reply_channel, client)
    tries.give_back(slot.pk, client)
    _record(album, slot, UnlockAttempt.Outcome.SUCCESS, via)
    AlbumKeySlot.objects.filter(pk=slot.pk).update(last_unlocked_at=timezone.now())
    try:
        return _queue(_real_requests(album, private, session_key, first), session_id, reply_channel, client)
    finally:
        del private


@sensitive_variables("password")
def begin_unlock(
    album: Album,
    slot_id: int,
    password: str,
    *,
    client: str,
    session_id: str,
    session_key: bytes,
    reply_channel: str,
    via: str,
    first: Sequence[str] = (),
) -> Started | Refused:
    """Check and open one unlock from ``client`` (its address), in this thread; every outcome but
    a flood of refusals is logged for the owner. The photos named in ``first`` (those in view) go
    first. (The websocket consumer runs the two halves itself, waiting for the turn between.)"""
    checked = check_unlock(album, slot_id, client=client, via=via)
    if isinstance(checked, Refused):
        return checked
    return open_unlock(
        album,
        checked,
        password,
        client=client,
        session_id=session_id,
        session_key=session_key,
        reply_channel=reply_channel,
        via=via,
        first=first,
    )


def _record(album: Album, slot: AlbumKeySlot | None, outcome: str, via: str) -> None:
    """Log an attempt for the owner, keeping the album's newest VEIL_UNLOCK_LOG_KEEP."""
    label = slot.label if slot is not None else ""
    UnlockAttempt.objects.create(album=album, slot=slot, slot_label=label, outcome=outcome, via=via)
    keep = settings.VEIL_UNLOCK_LOG_KEEP
    stale = list(album.unlock_attempts.order_by("-created_at", "-pk").values_list("pk", flat=True)[keep : keep + 100])
    if stale:
        UnlockAttempt.objects.filter(pk__in=stale).delete()


def _photos(album: Album, first: Sequence[str] = ()) -> Iterator[tuple[str, bytes]]:
    """The album's finished photos that have faces to bring back, as (id, their envelope's first
    bytes: envelope.HEAD_BYTES): those named in ``first`` in that order, then the rest newest
    first, as on the page. Only the head: a whole envelope is often hundreds of KB, and ten
    relatives unlocking a hundred photos at once would read it a thousand times."""
    head = Func(F("envelope"), Value(1), Value(envelope.HEAD_BYTES), function="substr", output_field=BinaryField())
    photos = (
        album.photos.filter(status=Photo.Status.DONE, faces__gt=0)
        .exclude(envelope=None)
        .annotate(head=head)
        .values_list("pk", "head")
    )
    if first:
        found = {str(pk): bytes(head or b"") for pk, head in photos.filter(pk__in=first)}
        yield from ((photo_id, found[photo_id]) for photo_id in dict.fromkeys(first) if photo_id in found)
        photos = photos.exclude(pk__in=first)
    # an empty envelope's head reads as NULL on SQLite; it opens no key (KEY_MISMATCH)
    yield from ((str(pk), bytes(head or b"")) for pk, head in photos.iterator())


@sensitive_variables("private", "content_key")
def _real_requests(
    album: Album, private: bytes, session_key: bytes, first: Sequence[str]
) -> Iterator[tuple[str, protocol.UnlockRequest | str]]:
    for photo_id, head in _photos(album, first):
        try:
            content_key = keys.open_content_key(envelope.sealed_content_key_of(head), private)
        except VeilError:
            yield photo_id, KEY_MISMATCH
            continue
        yield photo_id, protocol.UnlockRequest(session_key, content_key=content_key)
        del content_key


def _queue(
    requests: Iterator[tuple[str, protocol.UnlockRequest | str]], session_id: str, reply_channel: str, client: str
) -> Started | Refused:
    started = Started()
    try:
        if not sessions.open_session(session_id, client, settings.VEIL_UNLOCK_TTL + GRACE):
            return Refused("busy", TOO_MANY_VIEWINGS)
        for position, (photo_id, request) in enumerate(requests):
            if isinstance(request, str):
                started.failed[photo_id] = request
                continue
            # One more second of patience per photo queued ahead of this one.
            ttl = settings.VEIL_UNLOCK_TTL + position
            transit_id = transit.put_unlock(photo_id, request.to_bytes(), ttl)
            if len(started.photo_ids) < AHEAD_AT_FIRST:
                jobs.queue_recovery(photo_id, transit_id, reply_channel, session_id)
            else:
                started.later.append((photo_id, transit_id))
            started.photo_ids.append(photo_id)
            started.longest_wait = ttl
        sessions.extend(session_id, client, started.longest_wait + GRACE)
        started.workers = workers.alive_count()
    except (redis.RedisError, OperationalError, OSError):
        log.exception("could not queue an unlock of album photos")
        with contextlib.suppress(redis.RedisError):  # its photos queued so far are skipped
            sessions.close_session(session_id, client)
        return Refused("unavailable", QUEUE_DOWN)
    return started

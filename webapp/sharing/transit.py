"""Unlock requests in the transit store (see :mod:`webapp.albums.transit`).

An unlock request is a photo's opened content key (or a decoy password) with the viewing
session's key (:mod:`webapp.sharing.protocol`), sealed to the workers' transit key under
``veil:transit:unlock:<photo id>.<random>`` with a short TTL. A worker takes it with GETDEL, so
it is gone from Redis the moment it is used.
"""

from __future__ import annotations

import uuid

from django.conf import settings

from cipher_worker import keys
from webapp.albums.transit import KEY_PREFIX, client, delete_keys, transit_private_key
from webapp.redisdb import keep_at_least

UNLOCK_PREFIX = KEY_PREFIX + "unlock:"


def unlock_key(transit_id: str) -> str:
    return f"{UNLOCK_PREFIX}{transit_id}"


def unlock_context(photo_id: uuid.UUID | str) -> bytes:
    return b"veil/unlock/" + str(photo_id).encode("ascii")


def put_unlock(photo_id: uuid.UUID | str, request: bytes, ttl: int) -> str:
    """Seal an unlock request for ``photo_id`` to the workers; returns its transit id (the photo
    id, so a deleted photo's pending requests can be found, and 128 random bits)."""
    transit_id = f"{photo_id}.{uuid.uuid4().hex}"
    sealed = keys.seal(request, settings.VEIL_TRANSIT_PUBLIC_KEY, unlock_context(photo_id))
    client().set(unlock_key(transit_id), sealed, ex=ttl)
    return transit_id


def take_unlock(transit_id: str, photo_id: uuid.UUID | str) -> bytes | None:
    """The unlock request, removed from Redis as it is read; None if it expired or was taken.

    Raises cipher_worker.errors.WrongKey if it was sealed to another key or for another photo.
    """
    private = transit_private_key()
    sealed = client().getdel(unlock_key(transit_id))
    if sealed is None:
        return None
    return keys.open_sealed(bytes(sealed), private, unlock_context(photo_id))  # type: ignore[arg-type]


def keep_unlock(transit_id: str, ttl: int) -> None:
    """Let a request not yet queued wait ``ttl`` more seconds (its viewing is still receiving)."""
    keep_at_least(ttl, unlock_key(transit_id))


def discard_unlocks(transit_ids: list[str]) -> None:
    """Delete these requests, which no worker will be asked to take (their viewing ended)."""
    delete_keys([unlock_key(t) for t in transit_ids])


def forget_unlocks(photo_ids: list[uuid.UUID] | list[str]) -> None:
    """Delete the requests for these photos not yet taken (one SCAN over the unlock entries)."""
    wanted = {str(p) for p in photo_ids}
    if not wanted:
        return
    doomed = [
        key.decode()
        for key in client().scan_iter(match=UNLOCK_PREFIX + "*", count=1000)
        if key.decode().removeprefix(UNLOCK_PREFIX).split(".", 1)[0] in wanted
    ]
    delete_keys(doomed)

"""The transit store: what a worker needs waits in Redis, sealed to the workers' key, with a TTL.

Two kinds of entry: uploads (here) and unlock requests (:mod:`webapp.sharing.transit`). Both are
sealed with ``keys.seal`` to the transit public key, under ``veil:transit:``.

The web process seals the original bytes to the transit public key (``keys.seal`` with the
context ``b"veil/upload/" + photo id``, so a blob cannot be replayed as another photo) and
stores them under ``veil:transit:<photo id>`` with a TTL. The Celery message carries only the
photo id. The worker reads the blob, opens it with the transit private key and deletes it
once the photo is finished; if no worker ever finishes it, Redis drops it at the TTL.
"""

from __future__ import annotations

import uuid

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from cipher_worker import keys
from webapp.redisdb import client

KEY_PREFIX = "veil:transit:"


def transit_key(photo_id: uuid.UUID | str) -> str:
    return f"{KEY_PREFIX}{photo_id}"


def seal_context(photo_id: uuid.UUID | str) -> bytes:
    return b"veil/upload/" + str(photo_id).encode("ascii")


def put_upload(photo_id: uuid.UUID | str, data: bytes) -> None:
    """Seal ``data`` to the workers and leave it in Redis for VEIL_TRANSIT_TTL seconds."""
    sealed = keys.seal(data, settings.VEIL_TRANSIT_PUBLIC_KEY, seal_context(photo_id))
    client().set(transit_key(photo_id), sealed, ex=settings.VEIL_TRANSIT_TTL)


def get_upload(photo_id: uuid.UUID | str) -> bytes | None:
    """The original bytes of an upload, or None if it expired or was already finished.

    Raises cipher_worker.errors.WrongKey if the blob was sealed to another transit key.
    """
    private = settings.VEIL_TRANSIT_PRIVATE_KEY
    if private is None:
        raise ImproperlyConfigured("this process has no VEIL_TRANSIT_PRIVATE_KEY, so it cannot run photo tasks")
    sealed = client().get(transit_key(photo_id))
    if sealed is None:
        return None
    return keys.open_sealed(bytes(sealed), private, seal_context(photo_id))  # type: ignore[arg-type]


def discard_upload(photo_id: uuid.UUID | str) -> None:
    client().delete(transit_key(photo_id), attempts_key(photo_id))


def attempts_key(photo_id: uuid.UUID | str) -> str:
    return f"veil:attempts:{photo_id}"


def count_attempt(photo_id: uuid.UUID | str) -> int:
    """How many times a worker has started on this upload (this start included); lives as long
    as the upload, so a photo that keeps killing its worker is noticed."""
    key = attempts_key(photo_id)
    with client().pipeline() as pipe:
        pipe.incr(key)
        pipe.expire(key, settings.VEIL_TRANSIT_TTL)
        count, _ = pipe.execute()
    return int(count)


def reset_attempts(photo_id: uuid.UUID | str) -> None:
    client().delete(attempts_key(photo_id))


def has_upload(photo_id: uuid.UUID | str) -> bool:
    return bool(client().exists(transit_key(photo_id)))


def transit_private_key() -> bytes:
    """The workers' key, which opens what waits here; only worker processes have it."""
    private = settings.VEIL_TRANSIT_PRIVATE_KEY
    if private is None:
        raise ImproperlyConfigured("this process has no VEIL_TRANSIT_PRIVATE_KEY, so it cannot run photo tasks")
    return private


def forget_photos(photo_ids: list[uuid.UUID] | list[str]) -> None:
    """Delete these photos' sealed uploads and attempt counters."""
    doomed = [transit_key(p) for p in photo_ids] + [attempts_key(p) for p in photo_ids]
    delete_keys(doomed)


def delete_keys(doomed: list[str]) -> None:
    r = client()
    for start in range(0, len(doomed), 500):
        r.delete(*doomed[start : start + 500])

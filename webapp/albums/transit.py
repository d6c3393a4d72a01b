"""The transit store: what a worker needs waits in Redis, sealed to the workers' key.

Two kinds of entry, both sealed with ``keys.seal`` to the transit public key, both with a TTL:
uploads (below) and unlock requests (``veil:transit:unlock:<photo id>.<random>``: a photo's opened
content key or a decoy password, with the viewing session's key; see webapp.sharing). A worker
takes an unlock request with GETDEL, so it is gone from Redis the moment it is used.

Uploads:

The web process seals the original bytes to the transit public key (``keys.seal`` with the
context ``b"veil/upload/" + photo id``, so a blob cannot be replayed as another photo) and
stores them under ``veil:transit:<photo id>`` with a TTL. The Celery message carries only the
photo id. The worker reads the blob, opens it with the transit private key and deletes it
once the photo is finished; if no worker ever finishes it, Redis drops it at the TTL.
"""

from __future__ import annotations

import functools
import uuid

import redis
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from cipher_worker import keys

KEY_PREFIX = "veil:transit:"
UNLOCK_PREFIX = KEY_PREFIX + "unlock:"


@functools.cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def client() -> redis.Redis:
    """The process-wide Redis connection pool for REDIS_URL."""
    return _client(settings.REDIS_URL)


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


def _transit_private_key() -> bytes:
    private = settings.VEIL_TRANSIT_PRIVATE_KEY
    if private is None:
        raise ImproperlyConfigured("this process has no VEIL_TRANSIT_PRIVATE_KEY, so it cannot run photo tasks")
    return private


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
    private = _transit_private_key()
    sealed = client().getdel(unlock_key(transit_id))
    if sealed is None:
        return None
    return keys.open_sealed(bytes(sealed), private, unlock_context(photo_id))  # type: ignore[arg-type]


def forget_photos(photo_ids: list[uuid.UUID] | list[str]) -> None:
    """Delete whatever of these photos waits in Redis: uploads, attempt counters and unlock
    requests not yet taken (found with one SCAN over the unlock entries)."""
    if not photo_ids:
        return
    r = client()
    wanted = {str(p) for p in photo_ids}
    doomed = [transit_key(p) for p in wanted] + [attempts_key(p) for p in wanted]
    for key in r.scan_iter(match=UNLOCK_PREFIX + "*", count=1000):
        if key.decode().removeprefix(UNLOCK_PREFIX).split(".", 1)[0] in wanted:
            doomed.append(key.decode())
    for start in range(0, len(doomed), 500):
        r.delete(*doomed[start : start + 500])

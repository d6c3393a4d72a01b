"""Accepting an upload: a queued Photo row, the sealed bytes in the transit store, a task."""

from __future__ import annotations

import logging

from django.db import transaction

from webapp.realtime.status import send_status

from . import transit
from .models import Album, Photo
from .tasks import anonymize_photo

log = logging.getLogger(__name__)


class QueueUnavailable(Exception):
    """Redis or the broker did not take the upload; nothing was kept."""

    message = "Veil's photo queue is not reachable right now; please try again in a minute."


def accept_upload(album: Album, data: bytes) -> Photo:
    """Queue ``data`` (the original bytes, in memory) for anonymization into ``album``.

    The bytes go to Redis sealed to the workers' transit key; the task message holds only the
    photo id. Raises QueueUnavailable (and keeps no row) if Redis or the broker is down.
    """
    photo = Photo.objects.create(album=album)
    try:
        transit.put_upload(photo.pk, data)
        transaction.on_commit(lambda: anonymize_photo.delay(str(photo.pk)))
    except Exception as exc:
        log.exception("could not queue photo %s", photo.pk)
        _forget(photo)
        raise QueueUnavailable(QueueUnavailable.message) from exc
    send_status(album.owner_id, photo.live_status())
    return photo


def _forget(photo: Photo) -> None:
    try:
        transit.discard_upload(photo.pk)
    except Exception:
        log.warning("could not remove the transit copy of photo %s", photo.pk, exc_info=True)
    photo.delete()


def retry_photo(photo: Photo) -> bool:
    """Queue a failed photo again if the failure was ours and its upload is still in transit."""
    if photo.status != Photo.Status.FAILED or not photo.retryable or not transit.has_upload(photo.pk):
        return False
    Photo.objects.filter(pk=photo.pk).update(status=Photo.Status.QUEUED, progress=0.0, failure_reason="")
    photo.refresh_from_db()
    transaction.on_commit(lambda: anonymize_photo.delay(str(photo.pk)))
    send_status(photo.album.owner_id, photo.live_status())
    return True

"""Deleting a photo so that nothing of it is left: its stored files, its row (the envelope is in
it), its sealed upload and attempt counter in Redis, its stored-size row; the dashboard's task
rows stay, without the link."""

from __future__ import annotations

import uuid

from django.db import transaction
from django.db.models.fields.files import FieldFile

from . import transit
from .models import Photo

STILL_WORKING = "This photo is still being anonymized; delete it once it is done or has failed."


class StillWorking(Exception):
    """A worker may be writing this photo's files right now: deleting it would leave them behind."""


def delete_photo(photo: Photo) -> None:
    """Everything of ``photo``, once no worker is on it (StillWorking otherwise)."""
    with transaction.atomic():
        locked = Photo.objects.select_for_update().filter(pk=photo.pk).first()
        if locked is None:
            return  # already gone
        if locked.in_progress:
            raise StillWorking(STILL_WORKING)
        files = [f for f in (locked.image, locked.thumbnail) if f]
        locked.delete()
        # files after the row is gone for good: a failed commit must not leave a row without them
        transaction.on_commit(lambda: _forget_files_and_transit(photo.pk, files))


def _forget_files_and_transit(photo_id: uuid.UUID, files: list[FieldFile]) -> None:
    for stored in files:
        if stored.name:
            stored.storage.delete(stored.name)
    r = transit.client()
    r.delete(transit.transit_key(str(photo_id)), transit.attempts_key(str(photo_id)))

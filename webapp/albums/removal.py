"""Deleting a photo or a whole album so that nothing of it is left.

A photo: its stored files, its row (the envelope is in it), its sealed upload, attempt counter
and pending unlock requests in Redis. An album: all of that for every photo, and its key slots,
share link (a column of the album row), unlock log and password-try counters. The dashboard's
task rows stay, without the link.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path

import redis
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.fields.files import FieldFile
from django.dispatch import Signal

from . import transit
from .models import Album, Photo

log = logging.getLogger(__name__)

# Sent once a deletion has committed, with ``photo_ids``: an app that keeps something of a photo
# elsewhere forgets it (webapp.sharing: unlock requests not yet taken).
photos_deleted = Signal()

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
        transaction.on_commit(lambda: _forget(files, [photo.pk]))


def delete_album(album: Album) -> int:
    """Everything of ``album``; returns how many photos went with it. Photos still being
    anonymized do not hold it up: their worker finds the row gone and removes its own files."""
    with transaction.atomic():
        locked = Album.objects.select_for_update().filter(pk=album.pk).first()
        if locked is None:
            return 0
        photos = list(Photo.objects.filter(album=locked).only("pk", "image", "thumbnail"))
        files = [f for p in photos for f in (p.image, p.thumbnail) if f]
        # cascades to photos, key slots and the unlock log; webapp.sharing forgets the slots' try counters
        locked.delete()
        transaction.on_commit(lambda: _forget(files, [p.pk for p in photos]))
    return len(photos)


def _forget(files: list[FieldFile], photo_ids: list[uuid.UUID]) -> None:
    folders = set()
    for stored in files:
        if stored.name:
            stored.storage.delete(stored.name)
            folders.add(stored.name.rsplit("/", 1)[0])
    for folder in folders:  # the album's folder, once empty (a photo still being stored keeps it)
        with contextlib.suppress(OSError, NotImplementedError):
            path = Path(default_storage.path(folder))
            if path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    try:
        transit.forget_photos(photo_ids)
    except redis.RedisError:  # what waits there is sealed and expires with its TTL
        log.warning("could not remove the transit entries of %d deleted photos", len(photo_ids), exc_info=True)
    photos_deleted.send(sender=Photo, photo_ids=photo_ids)

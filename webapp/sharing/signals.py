"""What a deletion takes from Redis besides the rows: a key slot's or album's password-try
counters, a photo's unlock requests not yet taken. All of it would expire by itself anyway, so
a Redis that is down costs nothing but a log line."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import redis
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from webapp.albums.models import Album, AlbumKeySlot
from webapp.albums.removal import photos_deleted

from . import transit
from .tries import limiter, unknown_slot

log = logging.getLogger(__name__)


def _forget(slot: int | str) -> None:
    try:
        limiter().forget(slot)
    except redis.RedisError:
        log.warning("could not remove the try counters of %s", slot, exc_info=True)


@receiver(post_delete, sender=AlbumKeySlot)
def forget_slot_tries(instance: AlbumKeySlot, **_: Any) -> None:
    slot_id = instance.pk
    transaction.on_commit(lambda: _forget(slot_id))


@receiver(post_delete, sender=Album)
def forget_unknown_name_tries(instance: Album, **_: Any) -> None:
    album_id = instance.pk
    transaction.on_commit(lambda: _forget(unknown_slot(album_id)))


@receiver(photos_deleted)
def forget_unlock_requests(photo_ids: list[uuid.UUID], **_: Any) -> None:
    try:
        transit.forget_unlocks(photo_ids)
    except redis.RedisError:
        log.warning("could not remove the unlock requests of %d deleted photos", len(photo_ids), exc_info=True)

"""Photos whose upload was lost on the way to a worker, found when someone looks at them and
whenever a worker starts.

A photo's sealed upload stays in Redis for as long as the photo is in progress: a worker drops
it only after the finished photo is committed (or failed). So a photo still "in progress" a
minute after it was queued, with no sealed upload left, will never finish: Redis lost it (a
restart without persistence) or its TTL ran out in a long queue. Such photos are marked failed
with a reason, so nothing stays "queued" for ever; the owner uploads them again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from django.db.models import QuerySet
from django.utils import timezone

from webapp.texts import UPLOAD_LOST

from . import transit
from .models import Photo

log = logging.getLogger(__name__)

GRACE = 60  # seconds: a batch's rows are made a moment before its uploads reach Redis


def fail_lost(photos: QuerySet[Photo]) -> int:
    """Mark the lost ones among ``photos`` failed; how many were. Redis being away decides nothing."""
    stale = photos.filter(status__in=Photo.IN_PROGRESS, created_at__lt=timezone.now() - timedelta(seconds=GRACE))
    candidates = list(stale.values_list("pk", flat=True)[:500])
    if not candidates:
        return 0
    try:
        pipe = transit.client().pipeline(transaction=False)
        for photo_id in candidates:
            pipe.exists(transit.transit_key(photo_id))
        present = pipe.execute()
    except redis.RedisError:
        log.warning("could not look for lost uploads", exc_info=True)
        return 0
    lost = [photo_id for photo_id, there in zip(candidates, present, strict=True) if not there]
    # only if still in progress: a worker that finished meanwhile wins
    return Photo.objects.filter(pk__in=lost, status__in=Photo.IN_PROGRESS).update(
        status=Photo.Status.FAILED, failure_reason=UPLOAD_LOST, retryable=False, image_bytes=None
    )


def fail_all_lost() -> int:
    """:func:`fail_lost` over every photo, in batches; how many were lost."""
    total = 0
    while (found := fail_lost(Photo.objects.all())) > 0:
        total += found
    return total

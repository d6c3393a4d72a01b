"""Photos whose upload was lost on the way to a worker, found when someone looks at them.

An upload waits sealed in Redis for VEIL_TRANSIT_TTL seconds, and no task may hold a worker
longer than the task time limit. A photo still "in progress" after both, with no sealed upload
left in Redis, will never finish: Redis lost it (a restart) or its task was lost. Such photos are
marked failed with a reason, so nothing stays "queued" for ever; the owner uploads them again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import redis
from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from webapp.texts import UPLOAD_LOST

from . import transit
from .models import Photo

log = logging.getLogger(__name__)


def fail_lost(photos: QuerySet[Photo]) -> int:
    """Mark the lost ones among ``photos`` failed; how many were. Redis being away decides nothing."""
    patience = settings.VEIL_TRANSIT_TTL + settings.CELERY_TASK_TIME_LIMIT
    stale = photos.filter(status__in=Photo.IN_PROGRESS, created_at__lt=timezone.now() - timedelta(seconds=patience))
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
